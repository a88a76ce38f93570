//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`
//! with the key given as `whsec_<base64>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Error, ErrorKind, Result};

/// The `webhook-signature` header value for one request.
///
/// # Examples
///
/// ```
/// // The example of the Standard Webhooks specification.
/// let sig = pgbroker_http::webhooks::sign(
///     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
///     "msg_p5jXN8AQM9LWM0D4loKWxJek",
///     1614265330,
///     br#"{"test": 2432232314}"#,
/// )?;
/// assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
/// # Ok::<(), pgbroker_http::Error>(())
/// ```
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String> {
    let key = secret_key(secret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "empty webhook secret"))?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// The key bytes of a `whsec_...` secret.
pub(crate) fn secret_key(secret: &str) -> Result<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            "a webhook secret starts with whsec_",
        )
    })?;
    let key = STANDARD.decode(b64).map_err(|e| {
        Error::with_source(
            ErrorKind::InvalidInput,
            "a webhook secret is whsec_ + base64",
            e,
        )
    })?;
    if key.is_empty() {
        return Err(Error::new(ErrorKind::InvalidInput, "empty webhook secret"));
    }
    Ok(key)
}
