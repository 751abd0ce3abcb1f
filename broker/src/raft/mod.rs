//! The Raft consensus core: a pure state machine driven by `tick`, `step` and `propose`.
//! It never touches tokio, quinn, files, the wall clock or a global RNG (tests/tidy enforces it).
