//! The bytes of one group's Raft messages between nodes (docs/TRANSPORT.md "Raft payloads"):
//! a postcard head (the sender's incarnation and the messages, each entry's payload replaced by
//! its length) followed by the entries' payloads back to back, in order.
//!
//! The payloads are nearly all of the bytes a leader sends. Keeping them out of postcard lets
//! the sender hand each entry's own `Bytes` to the transport instead of copying it into an
//! encoding buffer once per follower, and lets the receiver slice each payload out of the
//! received frame instead of copying it out. Decoding is total: a head that does not parse, or
//! lengths that do not add up to exactly the bytes after the head, give `None`.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use keel_raft::{AppendEntries, Entry, EntryKind, Incarnation, Index, Message, MessageBody, Term};

#[derive(Serialize)]
struct HeadRef<'a> {
    incarnation: Incarnation,
    messages: Vec<WireMessageRef<'a>>,
}

#[derive(Deserialize)]
struct Head {
    incarnation: Incarnation,
    messages: Vec<WireMessage>,
}

#[derive(Serialize)]
struct WireMessageRef<'a> {
    term: Term,
    body: WireBodyRef<'a>,
}

#[derive(Deserialize)]
struct WireMessage {
    term: Term,
    body: WireBody,
}

/// The two body enums must list their variants in the same order: postcard identifies a
/// variant by its position.
#[derive(Serialize)]
enum WireBodyRef<'a> {
    AppendEntries(AppendHead),
    Other(&'a MessageBody),
}

#[derive(Deserialize)]
enum WireBody {
    AppendEntries(AppendHead),
    Other(MessageBody),
}

#[derive(Serialize, Deserialize)]
struct AppendHead {
    prev_log_index: Index,
    prev_log_term: Term,
    entries: Vec<EntryHead>,
    leader_commit: Index,
}

#[derive(Serialize, Deserialize)]
struct EntryHead {
    index: Index,
    term: Term,
    kind: EntryKind,
    payload_bytes: u32,
}

/// Encodes the messages of one `Ready` for one peer: the head first, then every entry payload
/// as its own chunk (shared with the caller's entries, not copied). `None` if an entry is
/// larger than any frame can carry or postcard fails (logged).
pub fn encode(incarnation: Incarnation, messages: &[Message]) -> Option<Vec<Bytes>> {
    let mut chunks = vec![Bytes::new()];
    let mut wire = Vec::with_capacity(messages.len());
    for message in messages {
        let body = match &message.body {
            MessageBody::AppendEntries(append) => {
                let mut entries = Vec::with_capacity(append.entries.len());
                for entry in &append.entries {
                    let Ok(payload_bytes) = u32::try_from(entry.payload.len()) else {
                        tracing::error!(index = entry.index, "entry too large to send");
                        return None;
                    };
                    entries.push(EntryHead {
                        index: entry.index,
                        term: entry.term,
                        kind: entry.kind,
                        payload_bytes,
                    });
                    if !entry.payload.is_empty() {
                        chunks.push(entry.payload.clone());
                    }
                }
                WireBodyRef::AppendEntries(AppendHead {
                    prev_log_index: append.prev_log_index,
                    prev_log_term: append.prev_log_term,
                    entries,
                    leader_commit: append.leader_commit,
                })
            }
            other => WireBodyRef::Other(other),
        };
        wire.push(WireMessageRef {
            term: message.term,
            body,
        });
    }
    let head = HeadRef {
        incarnation,
        messages: wire,
    };
    match postcard::to_allocvec(&head) {
        Ok(head) => {
            chunks[0] = Bytes::from(head);
            Some(chunks)
        }
        Err(error) => {
            tracing::error!(%error, "encoding Raft messages");
            None
        }
    }
}

/// Decodes a payload made by [`encode`]; entry payloads are slices of `payload`.
pub fn decode(payload: &Bytes) -> Option<(Incarnation, Vec<Message>)> {
    let (head, rest) = postcard::take_from_bytes::<Head>(payload).ok()?;
    let mut position = payload.len() - rest.len();
    let mut messages = Vec::with_capacity(head.messages.len());
    for message in head.messages {
        let body = match message.body {
            WireBody::AppendEntries(append) => {
                let mut entries = Vec::with_capacity(append.entries.len());
                for entry in append.entries {
                    let end = position.checked_add(entry.payload_bytes as usize)?;
                    if end > payload.len() {
                        return None;
                    }
                    entries.push(Entry {
                        index: entry.index,
                        term: entry.term,
                        kind: entry.kind,
                        payload: payload.slice(position..end),
                    });
                    position = end;
                }
                MessageBody::AppendEntries(AppendEntries {
                    prev_log_index: append.prev_log_index,
                    prev_log_term: append.prev_log_term,
                    entries,
                    leader_commit: append.leader_commit,
                })
            }
            WireBody::Other(body) => body,
        };
        messages.push(Message {
            term: message.term,
            body,
        });
    }
    // Every byte after the head belongs to exactly one entry.
    (position == payload.len()).then_some((head.incarnation, messages))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft::{AppendEntriesResponse, AppendResult, VoteRequest};

    fn entry(index: Index, payload: &'static [u8]) -> Entry {
        Entry {
            index,
            term: 2,
            kind: EntryKind::Data,
            payload: Bytes::from_static(payload),
        }
    }

    fn sample() -> Vec<Message> {
        vec![
            Message {
                term: 2,
                body: MessageBody::AppendEntries(AppendEntries {
                    prev_log_index: 4,
                    prev_log_term: 1,
                    entries: vec![entry(5, b"hello"), entry(6, b""), entry(7, b"world!")],
                    leader_commit: 4,
                }),
            },
            Message {
                term: 2,
                body: MessageBody::RequestVote(VoteRequest {
                    last_log_index: 9,
                    last_log_term: 2,
                }),
            },
            Message {
                term: 3,
                body: MessageBody::AppendEntriesResponse(AppendEntriesResponse {
                    result: AppendResult::Accepted { match_index: 7 },
                    applied_index: 6,
                }),
            },
        ]
    }

    fn joined(chunks: &[Bytes]) -> Bytes {
        Bytes::from(chunks.concat())
    }

    #[test]
    fn messages_round_trip_and_payloads_travel_as_their_own_chunks() {
        let messages = sample();
        let chunks = encode(42, &messages).unwrap();
        assert_eq!(chunks.len(), 3, "the head, then the two non-empty payloads");
        assert_eq!(&chunks[1][..], b"hello");
        assert_eq!(chunks[2].as_ptr(), b"world!".as_ptr(), "shared, not copied");
        assert_eq!(decode(&joined(&chunks)), Some((42, messages)));
    }

    #[test]
    fn decoded_payloads_are_slices_of_the_frame() {
        let payload = joined(&encode(1, &sample()).unwrap());
        let (_, messages) = decode(&payload).unwrap();
        let MessageBody::AppendEntries(append) = &messages[0].body else {
            panic!("first message is the append");
        };
        let range = payload.as_ptr_range();
        assert!(range.contains(&append.entries[2].payload.as_ptr()));
    }

    #[test]
    fn lengths_that_do_not_match_the_bytes_are_refused() {
        let payload = joined(&encode(1, &sample()).unwrap());
        assert_eq!(decode(&payload.slice(..payload.len() - 1)), None, "short");
        let mut longer = payload.to_vec();
        longer.push(0);
        assert_eq!(decode(&Bytes::from(longer)), None, "trailing bytes");
        assert_eq!(
            decode(&Bytes::from_static(&[0xff, 0xff, 0xff])),
            None,
            "garbage"
        );
        assert_eq!(decode(&Bytes::new()), None, "empty");
    }

    proptest::proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode(&Bytes::from(bytes));
        }
    }
}
