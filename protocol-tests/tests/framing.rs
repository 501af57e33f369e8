//! Framing and request envelopes on canned bytes.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
use lagbalance::wire::frame::{decode_response, encode_request, split_frame};
use lagbalance::Error;

#[test]
fn complete_frame_is_split_and_rest_kept() {
    let mut buf = BytesMut::from(&[0, 0, 0, 3, b'a', b'b', b'c', 0, 0][..]);
    let frame = split_frame(&mut buf, 1024)
        .unwrap()
        .expect("complete frame");
    assert_eq!(&frame[..], b"abc");
    assert_eq!(&buf[..], &[0, 0], "the next frame's bytes stay buffered");
}

#[test]
fn truncated_frame_waits_for_more_bytes() {
    let mut buf = BytesMut::from(&[0, 0, 0, 10, 1, 2, 3, 4, 5][..]);
    assert!(split_frame(&mut buf, 1024).unwrap().is_none());
    assert_eq!(buf.len(), 9, "nothing consumed while incomplete");
    buf.put_slice(&[6, 7, 8, 9, 10]);
    let frame = split_frame(&mut buf, 1024).unwrap().expect("now complete");
    assert_eq!(&frame[..], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    // Fewer than four bytes: not even a length yet.
    let mut short = BytesMut::from(&[0, 0][..]);
    assert!(split_frame(&mut short, 1024).unwrap().is_none());
}

#[test]
fn oversized_length_prefix_is_rejected_without_allocating() {
    let mut buf = BytesMut::with_capacity(8);
    buf.put_slice(&[0x7f, 0xff, 0xff, 0xff]);
    let cap_before = buf.capacity();
    match split_frame(&mut buf, 100 * 1024 * 1024) {
        Err(Error::FrameTooLarge { len, max }) => {
            assert_eq!(len, i32::MAX as i64);
            assert_eq!(max, 100 * 1024 * 1024);
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    assert_eq!(buf.capacity(), cap_before, "no buffer of the claimed size");
}

#[test]
fn negative_length_prefix_is_rejected() {
    let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xfe, 0, 0][..]);
    let err = split_frame(&mut buf, 1024).unwrap_err();
    assert!(
        matches!(err, Error::FrameTooLarge { len: -2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
}

#[test]
fn request_envelope_matches_the_protocol_layout() {
    // ApiVersions v0 uses request header v1: key, version, correlation id, client id.
    let bytes = encode_request(&ApiVersionsRequest::default(), 0, 7, "c").unwrap();
    assert_eq!(
        &bytes[..],
        &[0, 0, 0, 11, 0, 18, 0, 0, 0, 0, 0, 7, 0, 1, b'c'],
        "size, api key 18, version 0, correlation 7, client id \"c\""
    );
}

#[test]
fn flexible_request_has_tagged_field_header() {
    // Metadata v9+ is flexible: header v2 adds an empty tagged-field section after client id.
    let bytes = encode_request(&MetadataRequest::default(), 9, 1, "").unwrap();
    let len = i32::from_be_bytes(bytes[0..4].try_into().unwrap()) as usize;
    assert_eq!(len, bytes.len() - 4);
    assert_eq!(&bytes[4..6], &[0, 3], "api key Metadata");
    assert_eq!(&bytes[6..8], &[0, 9], "version 9");
    assert_eq!(&bytes[12..14], &[0, 0], "empty client id");
    assert_eq!(bytes[14], 0, "no tagged fields in the header");
}

#[test]
fn truncated_response_body_is_a_clear_error() {
    // Correlation id, then an ApiVersions v0 body that claims 2 entries but holds 1.
    let frame = Bytes::from_static(&[
        0, 0, 0, 9, // correlation id
        0, 0, // error code
        0, 0, 0, 2, // two entries
        0, 3, 0, 0, 0, 12, // Metadata 0..12, then nothing
    ]);
    let err = decode_response::<ApiVersionsRequest>(frame, 0).unwrap_err();
    assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("ApiVersions v0 response"), "{err}");
}
