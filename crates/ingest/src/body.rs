//! Reading a request body: media type, content encoding, and size caps that hold before and
//! after decompression, so a compression bomb costs at most `max_body_bytes` of memory.

use std::io::Read;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use bytes::{Bytes, BytesMut};
use flate2::read::{DeflateDecoder, GzDecoder, ZlibDecoder};
use futures::StreamExt;

use crate::error::IngestError;

/// Bodies larger than this are inflated on the blocking pool rather than on the event loop.
const INLINE_INFLATE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

pub const SUPPORTED_MEDIA_TYPES: [&str; 2] = ["application/json", "text/plain"];
pub const SUPPORTED_ENCODINGS: [&str; 3] = ["identity", "gzip", "deflate"];

/// `application/json`, or `text/plain` carrying JSON (what `navigator.sendBeacon` sends with a
/// string); a request without a Content-Type is read as JSON.
fn check_media_type(req: &HttpRequest) -> Result<(), IngestError> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if SUPPORTED_MEDIA_TYPES.contains(&essence.as_str()) {
        Ok(())
    } else {
        Err(IngestError::UnsupportedMediaType {
            field: "content-type",
            reason: format!("{essence:?} is not supported; send application/json or text/plain"),
        })
    }
}

fn encoding(req: &HttpRequest) -> Result<Encoding, IngestError> {
    let Some(value) = req.headers().get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    match value
        .to_str()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "deflate" => Ok(Encoding::Deflate),
        other => Err(IngestError::UnsupportedMediaType {
            field: "content-encoding",
            reason: format!("{other:?} is not supported; send gzip, deflate or no encoding"),
        }),
    }
}

fn too_large(max: usize) -> IngestError {
    IngestError::PayloadTooLarge {
        field: "body",
        reason: format!("body exceeds {max} bytes"),
    }
}

/// Reads, caps and decompresses the body. Returns the decoded bytes and the bytes received.
pub async fn read(
    req: &HttpRequest,
    mut payload: web::Payload,
    max: usize,
) -> Result<(Bytes, usize), IngestError> {
    check_media_type(req)?;
    let encoding = encoding(req)?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large(max));
    }
    let mut received = BytesMut::with_capacity(declared.unwrap_or(8 * 1024).min(max));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            IngestError::InvalidBody(insightflow_model::BodyError::Malformed(e.to_string()))
        })?;
        if received.len() + chunk.len() > max {
            return Err(too_large(max));
        }
        received.extend_from_slice(&chunk);
    }
    let received = received.freeze();
    let wire_len = received.len();
    let decoded = match encoding {
        Encoding::Identity => received,
        _ if wire_len <= INLINE_INFLATE_BYTES => inflate(encoding, &received, max)?,
        _ => web::block(move || inflate(encoding, &received, max))
            .await
            .map_err(|e| IngestError::Internal(e.into()))??,
    };
    Ok((decoded, wire_len))
}

fn inflate(encoding: Encoding, compressed: &[u8], max: usize) -> Result<Bytes, IngestError> {
    let attempt = |reader: &mut dyn Read| -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity((compressed.len() * 4).min(max + 1));
        // Read one byte past the cap: if it is there, the body is too large.
        reader.take(max as u64 + 1).read_to_end(&mut out)?;
        Ok(out)
    };
    let result = match encoding {
        Encoding::Gzip => attempt(&mut GzDecoder::new(compressed)),
        // RFC 9110 "deflate" is zlib-wrapped, but some clients send raw deflate.
        Encoding::Deflate => attempt(&mut ZlibDecoder::new(compressed))
            .or_else(|_| attempt(&mut DeflateDecoder::new(compressed))),
        Encoding::Identity => Ok(compressed.to_vec()),
    };
    match result {
        Ok(out) if out.len() > max => Err(IngestError::PayloadTooLarge {
            field: "body",
            reason: format!("decompressed body exceeds {max} bytes"),
        }),
        Ok(out) => Ok(Bytes::from(out)),
        Err(e) => Err(IngestError::UnsupportedMediaType {
            field: "content-encoding",
            reason: format!("body is not valid {encoding:?} data: {e}").to_lowercase(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    #[test]
    fn a_gzip_bomb_stops_at_the_cap() {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(&vec![b' '; 50 * 1024 * 1024]).unwrap();
        let bomb = encoder.finish().unwrap();
        assert!(
            bomb.len() < 100 * 1024,
            "50 MiB of spaces compress to {} bytes",
            bomb.len()
        );
        let err = inflate(Encoding::Gzip, &bomb, 1024 * 1024).unwrap_err();
        assert!(
            matches!(err, IngestError::PayloadTooLarge { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn deflate_accepts_zlib_and_raw_streams() {
        let body = br#"{"event_type":"click","user_id":"u"}"#;
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Compression::fast());
        zlib.write_all(body).unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::fast());
        raw.write_all(body).unwrap();
        for compressed in [zlib.finish().unwrap(), raw.finish().unwrap()] {
            assert_eq!(
                &inflate(Encoding::Deflate, &compressed, 1024).unwrap()[..],
                body
            );
        }
    }

    #[test]
    fn corrupt_gzip_is_refused() {
        let err = inflate(Encoding::Gzip, b"definitely not gzip", 1024).unwrap_err();
        assert!(matches!(
            err,
            IngestError::UnsupportedMediaType {
                field: "content-encoding",
                ..
            }
        ));
    }
}
