//! The client side of the SASL mechanisms Sluice logs in with, as byte
//! messages (the frames that carry them are `client.rs`'s): PLAIN
//! (RFC 4616) and SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677):
//! a client-first with a random nonce, the server-first read with bounds
//! checks (everything from the broker is untrusted), PBKDF2 over ring,
//! a client-final with the proof, and the server's signature checked.
//!
//! The password is used as given (no SASLprep): an ASCII password, the
//! usual case, is the same either way.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::{digest, hmac, pbkdf2};
use subtle::ConstantTimeEq;

use crate::connector::kafka::security::Mechanism;

/// The fewest PBKDF2 iterations accepted (what the Java client requires).
pub const MIN_ITERATIONS: u32 = 4096;
/// The most: more is a broker making the client burn its CPU.
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// The longest server message read.
const MAX_MESSAGE: usize = 4096;
/// The longest salt accepted (bytes).
const MAX_SALT: usize = 1024;

/// PLAIN's one message: no authorization id, the user, the password.
pub fn plain(user: &str, password: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(user.len() + password.len() + 2);
    m.push(0);
    m.extend_from_slice(user.as_bytes());
    m.push(0);
    m.extend_from_slice(password.as_bytes());
    m
}

/// A SCRAM hash.
#[derive(Debug, Clone, Copy)]
enum Hash {
    Sha256,
    Sha512,
}

impl Hash {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            Hash::Sha256 => hmac::HMAC_SHA256,
            Hash::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Hash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Hash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }
}

fn mac(hash: Hash, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hash.hmac(), key), data)
        .as_ref()
        .to_vec()
}

/// A SCRAM exchange in progress, client side.
pub struct Scram {
    hash: Hash,
    password: String,
    client_first_bare: String,
    nonce: String,
    /// The server's signature to expect, once the client-final is made.
    server_signature: Option<Vec<u8>>,
}

impl Scram {
    /// A new exchange for `user` with a random nonce; `None` for a
    /// mechanism that is not SCRAM.
    pub fn new(mechanism: Mechanism, user: &str, password: &str) -> Option<Scram> {
        let mut bytes = [0u8; 24];
        // A nonce that cannot be random is still unique enough per
        // process and time; getrandom failing is near impossible on Linux.
        if getrandom::fill(&mut bytes).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes[..16].copy_from_slice(&t.to_le_bytes());
        }
        Scram::with_nonce(mechanism, user, password, &STANDARD.encode(bytes))
    }

    /// As [`Scram::new`] with a given nonce (printable, no comma: the RFC
    /// test vectors').
    pub fn with_nonce(
        mechanism: Mechanism,
        user: &str,
        password: &str,
        nonce: &str,
    ) -> Option<Scram> {
        let hash = match mechanism {
            Mechanism::ScramSha256 => Hash::Sha256,
            Mechanism::ScramSha512 => Hash::Sha512,
            Mechanism::Plain => return None,
        };
        let name = user.replace('=', "=3D").replace(',', "=2C");
        Some(Scram {
            hash,
            password: password.to_string(),
            client_first_bare: format!("n={name},r={nonce}"),
            nonce: nonce.to_string(),
            server_signature: None,
        })
    }

    /// The client-first message.
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// Reads the server-first message and makes the client-final; what is
    /// wrong with the server's message.
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        if server_first.len() > MAX_MESSAGE {
            return Err(format!(
                "the server-first message is {} bytes, more than {MAX_MESSAGE}",
                server_first.len()
            ));
        }
        let text = std::str::from_utf8(server_first)
            .map_err(|_| "the server-first message is not UTF-8".to_string())?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for (i, field) in text.split(',').enumerate() {
            match field.split_once('=') {
                Some(("m", _)) if i == 0 => {
                    return Err(
                        "the server asks for a SCRAM extension the client does not know".into(),
                    );
                }
                Some(("r", v)) if i == 0 => nonce = Some(v),
                Some(("s", v)) if i == 1 => salt = Some(v),
                Some(("i", v)) if i == 2 => iterations = Some(v),
                _ if i >= 3 => {} // extensions, ignored
                _ => {
                    return Err(format!(
                        "the server-first message `{}` is not `r=..,s=..,i=..`",
                        preview(text)
                    ));
                }
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(format!(
                "the server-first message `{}` lacks r, s or i",
                preview(text)
            ));
        };
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce) {
            return Err("the server's nonce does not extend the client's".into());
        }
        if !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err("the server's nonce has characters SCRAM does not allow".into());
        }
        if salt.len() > MAX_SALT * 4 / 3 + 4 {
            return Err("the server's salt is too long".into());
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| "the server's salt is not base64".to_string())?;
        if salt.is_empty() {
            return Err("the server's salt is empty".into());
        }
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|i| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(i))
            .ok_or_else(|| {
                format!(
                    "the server's iteration count `{}` is not from {MIN_ITERATIONS} to {MAX_ITERATIONS}",
                    preview(iterations)
                )
            })?;
        Ok(self.prove(text, nonce, &salt, iterations))
    }

    fn prove(&mut self, server_first: &str, nonce: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        let hash = self.hash;
        let mut salted = vec![0u8; hash.len()];
        let rounds = std::num::NonZeroU32::new(iterations).unwrap_or(std::num::NonZeroU32::MIN);
        pbkdf2::derive(
            hash.pbkdf2(),
            rounds,
            salt,
            self.password.as_bytes(),
            &mut salted,
        );
        let client_key = mac(hash, &salted, b"Client Key");
        let stored_key = digest::digest(hash.digest(), &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = mac(hash, stored_key.as_ref(), auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = mac(hash, &salted, b"Server Key");
        self.server_signature = Some(mac(hash, &server_key, auth_message.as_bytes()));
        format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes()
    }

    /// Checks the server-final message: the server proves it knows the
    /// password too. `Err(None)`: the server says authentication failed;
    /// `Err(Some(why))`: the message is wrong.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), Option<String>> {
        let text = std::str::from_utf8(
            server_final
                .get(..server_final.len().min(MAX_MESSAGE))
                .unwrap_or_default(),
        )
        .map_err(|_| Some("the server-final message is not UTF-8".to_string()))?;
        let first = text.split(',').next().unwrap_or_default();
        if first.starts_with("e=") {
            return Err(None);
        }
        let signature = first
            .strip_prefix("v=")
            .and_then(|v| STANDARD.decode(v).ok())
            .ok_or_else(|| {
                Some(format!(
                    "the server-final message `{}` is not `v=SIGNATURE`",
                    preview(text)
                ))
            })?;
        let expected = self
            .server_signature
            .as_deref()
            .ok_or_else(|| Some("a server-final message before the client-final".to_string()))?;
        if signature.len() != expected.len() || !bool::from(signature.ct_eq(expected)) {
            return Err(Some(
                "the server's signature is wrong: it does not know the password (a broker in the middle?)".into(),
            ));
        }
        Ok(())
    }
}

/// The start of an untrusted string, for an error message.
fn preview(s: &str) -> String {
    s.chars().take(80).flat_map(char::escape_default).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: SCRAM-SHA-256, user `user`, password `pencil`.
    #[test]
    fn scram_sha_256_matches_rfc_7677() {
        let mut s = Scram::with_nonce(
            Mechanism::ScramSha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
        )
        .expect("scram");
        assert_eq!(s.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first =
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final = s.client_final(server_first).expect("valid");
        assert_eq!(
            String::from_utf8(client_final).expect("utf8"),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            s.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Ok(())
        );
        assert!(matches!(
            s.verify(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(Some(_))
        ));
        assert_eq!(s.verify(b"e=invalid-proof"), Err(None));
    }

    /// SCRAM-SHA-512 with the RFC 7677 inputs, checked against Python's
    /// hashlib/hmac computing RFC 5802's formulas.
    #[test]
    fn scram_sha_512_proves_and_verifies() {
        let mut s = Scram::with_nonce(
            Mechanism::ScramSha512,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO",
        )
        .expect("scram");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let client_final =
            String::from_utf8(s.client_final(server_first).expect("valid")).expect("utf8");
        assert_eq!(client_final, SHA512_CLIENT_FINAL);
        assert_eq!(s.verify(SHA512_SERVER_FINAL.as_bytes()), Ok(()));
    }

    const SHA512_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
        p=gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwnYPJQ==";
    const SHA512_SERVER_FINAL: &str = "v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2rR7N7Zw==";

    #[test]
    fn a_bad_server_first_is_refused_without_panicking() {
        let fresh = || Scram::with_nonce(Mechanism::ScramSha256, "u", "p", "abc").expect("scram");
        for (bad, says) in [
            (&b"r=abcdef,s=c2FsdA==,i=0"[..], "iteration count `0`"),
            (b"r=abcdef,s=c2FsdA==,i=1000001", "iteration count"),
            (b"r=abcdef,s=c2FsdA==,i=-1", "iteration count"),
            (
                b"r=abcdef,s=c2FsdA==,i=99999999999999999999",
                "iteration count",
            ),
            (b"r=xyzdef,s=c2FsdA==,i=4096", "does not extend"),
            (b"r=abc,s=c2FsdA==,i=4096", "does not extend"),
            (b"r=abcdef,s=!!!,i=4096", "not base64"),
            (b"r=abcdef,s=,i=4096", "salt is empty"),
            (b"r=abcdef", "lacks r, s or i"),
            (b"", "not `r=..,s=..,i=..`"),
            (b"m=ext,r=abcdef,s=c2FsdA==,i=4096", "extension"),
            (b"\xff\xfe", "not UTF-8"),
            (&[b'r'; 5000][..], "more than 4096"),
        ] {
            let e = fresh().client_final(bad).expect_err(says);
            assert!(e.contains(says), "{:?}: {e}", String::from_utf8_lossy(bad));
        }
        assert!(fresh().verify(b"v=c2ln").is_err(), "no client-final yet");
        assert!(fresh().verify(b"garbage").is_err());
    }

    #[test]
    fn names_are_escaped_and_plain_is_nul_separated() {
        let s = Scram::with_nonce(Mechanism::ScramSha256, "a=b,c", "p", "n").expect("scram");
        assert_eq!(s.client_first(), b"n,,n=a=3Db=2Cc,r=n");
        assert!(Scram::new(Mechanism::Plain, "u", "p").is_none());
        assert_eq!(plain("u", "p"), b"\0u\0p");
    }
}
