//! Broker addresses as users and the cluster map write them: `host:port`, where host is a DNS
//! name, an IPv4 address or a bracketed IPv6 address (`[::1]:7070`). The host part is also the
//! TLS server name the client verifies (docs/CLIENT.md "Connections": the host part as dialled).

use std::fmt;
use std::net::IpAddr;

use crate::limits::MAX_BOOTSTRAP_ADDRESSES;

/// A parsed `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BrokerAddress {
    /// DNS name or IP address, without brackets.
    pub host: String,
    pub port: u16,
}

/// Why a string is not a broker address or a bootstrap list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("empty address")]
    Empty,
    #[error("{address:?}: expected host:port")]
    MissingPort { address: String },
    #[error("{address:?}: invalid port")]
    InvalidPort { address: String },
    #[error("{address:?}: invalid host")]
    InvalidHost { address: String },
    #[error("bootstrap list holds {count} addresses, at most {MAX_BOOTSTRAP_ADDRESSES} allowed")]
    TooMany { count: usize },
}

impl BrokerAddress {
    /// Parses `host:port` / `[v6]:port`. Port 0 is refused: nothing listens there.
    pub fn parse(text: &str) -> Result<BrokerAddress, AddressError> {
        let address = text.trim();
        if address.is_empty() {
            return Err(AddressError::Empty);
        }
        let missing_port = || AddressError::MissingPort {
            address: address.to_string(),
        };
        let (host, port) = if let Some(rest) = address.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(missing_port)?;
            let port = after.strip_prefix(':').ok_or_else(missing_port)?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(AddressError::InvalidHost {
                    address: address.to_string(),
                });
            }
            (host, port)
        } else {
            let (host, port) = address.rsplit_once(':').ok_or_else(missing_port)?;
            // An unbracketed IPv6 address is ambiguous (`::1:7070`): ask for brackets.
            if host.contains(':') {
                return Err(AddressError::InvalidHost {
                    address: address.to_string(),
                });
            }
            (host, port)
        };
        let port: u16 = port.parse().map_err(|_| AddressError::InvalidPort {
            address: address.to_string(),
        })?;
        if port == 0 {
            return Err(AddressError::InvalidPort {
                address: address.to_string(),
            });
        }
        if !valid_host(host) {
            return Err(AddressError::InvalidHost {
                address: address.to_string(),
            });
        }
        Ok(BrokerAddress {
            host: host.to_string(),
            port,
        })
    }

    /// Parses a comma-separated list (`--bootstrap`), ignoring empty items and duplicates.
    pub fn parse_list(text: &str) -> Result<Vec<BrokerAddress>, AddressError> {
        Self::parse_all(text.split(','))
    }

    /// Parses each string as one address (or a comma-separated list), in order, without
    /// duplicates. At least one address is required.
    pub fn parse_all<'a>(
        items: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<BrokerAddress>, AddressError> {
        let mut addresses: Vec<BrokerAddress> = Vec::new();
        for item in items {
            for part in item
                .split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
            {
                let address = BrokerAddress::parse(part)?;
                if !addresses.contains(&address) {
                    addresses.push(address);
                }
                if addresses.len() > MAX_BOOTSTRAP_ADDRESSES {
                    return Err(AddressError::TooMany {
                        count: addresses.len(),
                    });
                }
            }
        }
        if addresses.is_empty() {
            return Err(AddressError::Empty);
        }
        Ok(addresses)
    }

    /// The name the server certificate must carry: the host as dialled.
    pub fn server_name(&self) -> &str {
        &self.host
    }
}

fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    // A DNS name: labels of letters, digits and hyphens (and `_`, which some internal zones use).
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(formatter, "[{}]:{}", self.host, self.port)
        } else {
            write!(formatter, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for BrokerAddress {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        BrokerAddress::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(host: &str, port: u16) -> BrokerAddress {
        BrokerAddress {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn addresses_parse_by_host_kind() {
        assert_eq!(
            BrokerAddress::parse("127.0.0.1:7070"),
            Ok(address("127.0.0.1", 7070))
        );
        assert_eq!(
            BrokerAddress::parse(" localhost:1 "),
            Ok(address("localhost", 1))
        );
        assert_eq!(BrokerAddress::parse("[::1]:7070"), Ok(address("::1", 7070)));
        assert_eq!(
            BrokerAddress::parse("broker-1.example.com:7071"),
            Ok(address("broker-1.example.com", 7071))
        );
        assert_eq!(address("::1", 7070).to_string(), "[::1]:7070");
        assert_eq!(address("node-1", 7).to_string(), "node-1:7");
    }

    #[test]
    fn bad_addresses_are_typed_errors() {
        assert_eq!(BrokerAddress::parse(""), Err(AddressError::Empty));
        assert!(matches!(
            BrokerAddress::parse("localhost"),
            Err(AddressError::MissingPort { .. })
        ));
        assert!(matches!(
            BrokerAddress::parse("localhost:0"),
            Err(AddressError::InvalidPort { .. })
        ));
        assert!(matches!(
            BrokerAddress::parse("localhost:65536"),
            Err(AddressError::InvalidPort { .. })
        ));
        assert!(matches!(
            BrokerAddress::parse("::1:7070"),
            Err(AddressError::InvalidHost { .. })
        ));
        assert!(matches!(
            BrokerAddress::parse("[nonsense]:7070"),
            Err(AddressError::InvalidHost { .. })
        ));
        assert!(matches!(
            BrokerAddress::parse("a b:7070"),
            Err(AddressError::InvalidHost { .. })
        ));
        assert!(matches!(
            BrokerAddress::parse("[::1]7070"),
            Err(AddressError::MissingPort { .. })
        ));
    }

    #[test]
    fn lists_split_on_commas_skip_empties_and_duplicates() {
        assert_eq!(
            BrokerAddress::parse_list("127.0.0.1:7070,127.0.0.1:7071,,127.0.0.1:7070"),
            Ok(vec![address("127.0.0.1", 7070), address("127.0.0.1", 7071)])
        );
        assert_eq!(BrokerAddress::parse_list(" , "), Err(AddressError::Empty));
        let many = (1..=65).map(|port| format!("h:{port}")).collect::<Vec<_>>();
        assert!(matches!(
            BrokerAddress::parse_list(&many.join(",")),
            Err(AddressError::TooMany { .. })
        ));
    }
}
