//! Signed result URLs: valid links verify; expired or tampered ones (any bit of job, exp or sig)
//! are refused; the key persists in the data directory.

use gallop_storage::signing::{DEFAULT_URL_TTL_SECS, SignatureError, UrlSigner};

/// Splits `{base}/v1/files/{job}?exp=E&sig=S` into its parts.
fn parts(url: &str) -> (String, u64, String) {
    let (path, query) = url.split_once('?').expect("query");
    let job = path.rsplit('/').next().unwrap().to_string();
    let mut exp = 0;
    let mut sig = String::new();
    for kv in query.split('&') {
        match kv.split_once('=').unwrap() {
            ("exp", v) => exp = v.parse().unwrap(),
            ("sig", v) => sig = v.to_string(),
            other => panic!("unexpected query part {other:?}"),
        }
    }
    (job, exp, sig)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn signed_url_is_absolute_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let signer = UrlSigner::load_or_create(dir.path(), "https://videos.example.com/").unwrap();
    let url = signer.sign_url("job-123", DEFAULT_URL_TTL_SECS);
    assert!(
        url.starts_with("https://videos.example.com/v1/files/job-123?exp="),
        "{url}"
    );
    let (job, exp, sig) = parts(&url);
    assert_eq!(job, "job-123");
    assert!(exp >= now() + DEFAULT_URL_TTL_SECS - 5 && exp <= now() + DEFAULT_URL_TTL_SECS + 5);
    assert_eq!(sig.len(), 64);
    assert_eq!(signer.verify(&job, exp, &sig), Ok(()));
}

#[test]
fn expired_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let signer = UrlSigner::load_or_create(dir.path(), "http://h").unwrap();
    let url = signer.url_with_exp("job", now() - 1);
    let (job, exp, sig) = parts(&url);
    assert_eq!(signer.verify(&job, exp, &sig), Err(SignatureError::Expired));
}

#[test]
fn every_tampered_bit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let signer = UrlSigner::load_or_create(dir.path(), "http://h").unwrap();
    let (job, exp, sig) = parts(&signer.sign_url("4f2a9c1e-job", 3600));
    // Each bit of the signature.
    let raw = hex::decode(&sig).unwrap();
    for bit in 0..raw.len() * 8 {
        let mut t = raw.clone();
        t[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            signer.verify(&job, exp, &hex::encode(&t)),
            Err(SignatureError::BadSignature),
            "sig bit {bit}"
        );
    }
    // Each bit of the job id (staying valid UTF-8: flip only the low bits of ASCII).
    for (i, _) in job.char_indices() {
        for bit in 0..7 {
            let mut b = job.clone().into_bytes();
            b[i] ^= 1 << bit;
            let Ok(tampered) = String::from_utf8(b) else {
                continue;
            };
            assert_eq!(
                signer.verify(&tampered, exp, &sig),
                Err(SignatureError::BadSignature),
                "job byte {i} bit {bit}"
            );
        }
    }
    // Each bit of exp (a later expiry must not verify either).
    for bit in 0..64 {
        let tampered = exp ^ (1u64 << bit);
        assert_eq!(
            signer.verify(&job, tampered, &sig),
            Err(SignatureError::BadSignature),
            "exp bit {bit}"
        );
    }
    // Garbage and truncation.
    for bad in ["", "zz", &sig[..62], &format!("{sig}00")] {
        assert_eq!(
            signer.verify(&job, exp, bad),
            Err(SignatureError::BadSignature)
        );
    }
    assert_eq!(signer.verify(&job, exp, &sig), Ok(()));
}

#[test]
fn key_is_created_once_and_reused_and_other_keys_do_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let a = UrlSigner::load_or_create(dir.path(), "http://h").unwrap();
    let key_file = dir.path().join("signing.key");
    let key = std::fs::read(&key_file).unwrap();
    assert_eq!(key.len(), 32);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key readable by others: {mode:o}");
    }
    let b = UrlSigner::load_or_create(dir.path(), "http://h").unwrap();
    assert_eq!(std::fs::read(&key_file).unwrap(), key, "key rewritten");
    let (job, exp, sig) = parts(&a.sign_url("j", 60));
    assert_eq!(
        b.verify(&job, exp, &sig),
        Ok(()),
        "restart invalidated links"
    );

    let other_dir = tempfile::tempdir().unwrap();
    let c = UrlSigner::load_or_create(other_dir.path(), "http://h").unwrap();
    assert_eq!(c.verify(&job, exp, &sig), Err(SignatureError::BadSignature));

    std::fs::write(&key_file, b"short").unwrap();
    let err = match UrlSigner::load_or_create(dir.path(), "http://h") {
        Ok(_) => panic!("a 5-byte key must be refused"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("expected 32 bytes"), "{err}");
}
