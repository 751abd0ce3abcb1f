//! Topic name rules (docs/WIRE.md "Topic names"): `[A-Za-z0-9._-]{1,200}`, and neither `.` nor
//! `..`, because names become directory names on the broker's disk.

use crate::limits::MAX_TOPIC_NAME_BYTES;

/// Why a string is not a valid topic name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name of {length_bytes} bytes exceeds {MAX_TOPIC_NAME_BYTES}")]
    TooLong { length_bytes: usize },
    #[error("topic name cannot be `.` or `..`")]
    DotPath,
    #[error("topic name has {character:?} at byte {position}; allowed: A-Z a-z 0-9 . _ -")]
    InvalidCharacter { character: char, position: usize },
}

/// Checks `name` against the topic name rules.
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name.len() > MAX_TOPIC_NAME_BYTES {
        return Err(TopicNameError::TooLong {
            length_bytes: name.len(),
        });
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::DotPath);
    }
    let allowed =
        |character: char| character.is_ascii_alphanumeric() || matches!(character, '.' | '_' | '-');
    match name
        .char_indices()
        .find(|&(_, character)| !allowed(character))
    {
        Some((position, character)) => Err(TopicNameError::InvalidCharacter {
            character,
            position,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_name_table() {
        let longest = "a".repeat(MAX_TOPIC_NAME_BYTES);
        let too_long = "a".repeat(MAX_TOPIC_NAME_BYTES + 1);
        let table: &[(&str, Result<(), TopicNameError>)] = &[
            ("orders", Ok(())),
            ("Orders.v2_eu-west-1", Ok(())),
            ("a", Ok(())),
            ("...", Ok(())),
            (".hidden", Ok(())),
            ("-", Ok(())),
            (&longest, Ok(())),
            ("", Err(TopicNameError::Empty)),
            (".", Err(TopicNameError::DotPath)),
            ("..", Err(TopicNameError::DotPath)),
            (
                &too_long,
                Err(TopicNameError::TooLong { length_bytes: 201 }),
            ),
            (
                "a/b",
                Err(TopicNameError::InvalidCharacter {
                    character: '/',
                    position: 1,
                }),
            ),
            (
                "../etc",
                Err(TopicNameError::InvalidCharacter {
                    character: '/',
                    position: 2,
                }),
            ),
            (
                "a b",
                Err(TopicNameError::InvalidCharacter {
                    character: ' ',
                    position: 1,
                }),
            ),
            (
                "a\\b",
                Err(TopicNameError::InvalidCharacter {
                    character: '\\',
                    position: 1,
                }),
            ),
            (
                "a\0",
                Err(TopicNameError::InvalidCharacter {
                    character: '\0',
                    position: 1,
                }),
            ),
            (
                "caf\u{e9}",
                Err(TopicNameError::InvalidCharacter {
                    character: '\u{e9}',
                    position: 3,
                }),
            ),
            (
                "a:b",
                Err(TopicNameError::InvalidCharacter {
                    character: ':',
                    position: 1,
                }),
            ),
        ];
        for (name, expected) in table {
            assert_eq!(&validate_topic_name(name), expected, "{name:?}");
        }
    }
}
