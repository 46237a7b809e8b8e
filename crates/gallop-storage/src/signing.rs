//! HMAC-SHA256 signed, expiring result URLs: `{public_url}/v1/files/{job}?exp=UNIX&sig=HEX`.
//! The URL is the capability: no bearer token is needed to download, so it must be unguessable
//! and must stop working after `exp`.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Default lifetime of a result link, like upstream.
pub const DEFAULT_URL_TTL_SECS: u64 = 24 * 3600;

const KEY_FILE: &str = "signing.key";
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("link expired")]
    Expired,
    #[error("link signature is invalid")]
    BadSignature,
}

/// Signs and verifies file links with one secret key.
#[derive(Clone)]
pub struct UrlSigner {
    key: [u8; KEY_LEN],
    public_url: String,
}

impl UrlSigner {
    pub fn new(key: [u8; KEY_LEN], public_url: &str) -> UrlSigner {
        UrlSigner {
            key,
            public_url: public_url.trim_end_matches('/').to_string(),
        }
    }

    /// Loads `data_dir/signing.key`, creating it (32 random bytes, mode 0600) on first use, so
    /// links survive restarts.
    pub fn load_or_create(data_dir: &Path, public_url: &str) -> std::io::Result<UrlSigner> {
        let key = load_or_create_secret(&data_dir.join(KEY_FILE))?;
        Ok(UrlSigner::new(key, public_url))
    }

    /// The absolute signed URL of a job's result, valid for `ttl_secs` from now.
    pub fn sign_url(&self, job_id: &str, ttl_secs: u64) -> String {
        let exp = unix_now() + ttl_secs;
        self.url_with_exp(job_id, exp)
    }

    /// The absolute signed URL with an explicit expiry (unix seconds).
    pub fn url_with_exp(&self, job_id: &str, exp: u64) -> String {
        format!(
            "{}/v1/files/{}?exp={}&sig={}",
            self.public_url,
            job_id,
            exp,
            self.signature(job_id, exp)
        )
    }

    /// Hex HMAC of `job_id` and `exp`.
    pub fn signature(&self, job_id: &str, exp: u64) -> String {
        hex::encode(self.mac(job_id, exp).finalize().into_bytes())
    }

    /// Accepts a link only if the signature matches (constant-time) and `exp` is in the future.
    pub fn verify(&self, job_id: &str, exp: u64, sig_hex: &str) -> Result<(), SignatureError> {
        let sig = hex::decode(sig_hex).map_err(|_| SignatureError::BadSignature)?;
        self.mac(job_id, exp)
            .verify_slice(&sig)
            .map_err(|_| SignatureError::BadSignature)?;
        if exp <= unix_now() {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }

    fn mac(&self, job_id: &str, exp: u64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length works");
        // A separator no job id contains keeps (job, exp) pairs unambiguous.
        mac.update(b"gallop-file-v1\n");
        mac.update(job_id.as_bytes());
        mac.update(b"\n");
        mac.update(exp.to_string().as_bytes());
        mac
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads the 32-byte secret at `path`, creating it (random, mode 0600) when it does not exist.
pub fn load_or_create_secret(path: &Path) -> std::io::Result<[u8; KEY_LEN]> {
    match std::fs::read(path) {
        Ok(bytes) => bytes.as_slice().try_into().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: expected {KEY_LEN} bytes, found {}",
                    path.display(),
                    bytes.len()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut key = [0u8; KEY_LEN];
            rand::rng().fill_bytes(&mut key);
            write_private(path, &key)?;
            // Two processes racing: the file that won is the key.
            let stored = std::fs::read(path)?;
            Ok(stored.as_slice().try_into().unwrap_or(key))
        }
        Err(e) => Err(e),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut f) => f.write_all(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}
