//! Size-prefixed framing and request/response envelopes (pure: no I/O).
//!
//! Kafka frames every message as a big-endian int32 length followed by that many bytes. A peer
//! that announces a huge or negative length gets a clear error before we allocate anything.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use crate::error::{Error, Result};

/// Largest response frame we accept by default (Kafka's `socket.request.max.bytes` is 100 MiB).
pub const DEFAULT_MAX_FRAME: usize = 100 * 1024 * 1024;

/// Split one complete frame off the front of `buf`, if it holds one.
///
/// Returns `Ok(None)` while the frame is incomplete, so the caller reads more. The length prefix
/// is validated first: callers may use [`frame_len_hint`] to grow their buffer gradually.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>> {
    let Some(len) = frame_len_hint(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The announced length of the frame at the front of `buf`, validated against `max`.
pub fn frame_len_hint(buf: &[u8], max: usize) -> Result<Option<usize>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 0 || len as usize > max {
        return Err(Error::FrameTooLarge {
            len: len as i64,
            max,
        });
    }
    Ok(Some(len as usize))
}

/// Encode a request with its header into one length-prefixed frame.
pub fn encode_request<R: Request>(
    request: &R,
    version: i16,
    correlation_id: i32,
    client_id: &str,
) -> Result<Bytes> {
    let api = api_key(R::KEY)?;
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_owned())));
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0); // length, patched below
    header
        .encode(&mut buf, api.request_header_version(version))
        .map_err(|e| Error::malformed(format!("{api:?} request header"), e))?;
    request
        .encode(&mut buf, version)
        .map_err(|e| Error::Config(format!("cannot encode {api:?} v{version}: {e}")))?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Correlation id of a response frame (its first four bytes), without decoding the rest.
pub fn peek_correlation_id(frame: &[u8]) -> Result<i32> {
    if frame.len() < 4 {
        return Err(Error::malformed(
            "response header",
            format!("frame of {} bytes has no correlation id", frame.len()),
        ));
    }
    Ok(i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]))
}

/// Decode a response frame (header + body) for request type `R` at `version`.
pub fn decode_response<R: Request>(mut frame: Bytes, version: i16) -> Result<R::Response> {
    let api = api_key(R::KEY)?;
    let header_version = api.response_header_version(version);
    ResponseHeader::decode(&mut frame, header_version)
        .map_err(|e| Error::malformed(format!("{api:?} v{version} response header"), e))?;
    R::Response::decode(&mut frame, version)
        .map_err(|e| Error::malformed(format!("{api:?} v{version} response"), e))
}

pub(crate) fn api_key(key: i16) -> Result<ApiKey> {
    ApiKey::try_from(key).map_err(|_| Error::Config(format!("unknown api key {key}")))
}
