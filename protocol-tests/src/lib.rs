//! Protocol conformance tests live in `tests/`.
