//! Encryption at rest: a [`Backend`] over any other backend that seals every value before
//! it reaches the inner one, and opens it on the way back.
//!
//! The format is NaCl's `crypto_secretbox` as PyNaCl's `SecretBox.encrypt` writes it: a
//! fresh 24-byte nonce from the operating system's generator, the 16-byte Poly1305 tag,
//! then the XSalsa20 ciphertext. So values the Duck framework's `EncryptedCache` sealed
//! with the same 32-byte key read back, and the other way round. Keys, flags and TTLs
//! stay in the clear, as in the original.
//!
//! The cipher is RustCrypto's `crypto_secretbox` (pure Rust, audited with the rest of the
//! RustCrypto AEADs, no C toolchain or system libsodium needed); nonces come from
//! `getrandom`. The key lives only inside the cipher, which zeroes it when dropped.

use crate::backend::{
    Backend, Change, Current, Decide, EntryRef, KeyPage, KeyVisit, Remaining, Visit, VisitMany,
};
use crate::error::{Error, ErrorKind, Result};
use crate::ttl::Ttl;
use crypto_secretbox::aead::{AeadInPlace, KeyInit};
use crypto_secretbox::{Nonce, Tag, XSalsa20Poly1305};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Bytes of the random nonce in front of each sealed value.
pub const NONCE_LEN: usize = 24;
/// Bytes of the Poly1305 tag after the nonce.
pub const TAG_LEN: usize = 16;
/// Bytes a key must have.
pub const KEY_LEN: usize = 32;
/// What sealing adds to a value.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// Seals and opens values with one key.
pub struct SecretBox {
    cipher: XSalsa20Poly1305,
}

impl SecretBox {
    /// A box for `key`, which must be [`KEY_LEN`] bytes.
    pub fn new(key: &[u8]) -> Result<SecretBox> {
        if key.len() != KEY_LEN {
            return Err(Error::invalid_arg(format!(
                "the key is {} bytes; it must be {KEY_LEN}",
                key.len()
            )));
        }
        let cipher = XSalsa20Poly1305::new_from_slice(key)
            .map_err(|_| Error::invalid_arg("the key is not a valid XSalsa20 key"))?;
        Ok(SecretBox { cipher })
    }

    /// `nonce || tag || ciphertext` of `plain`, with a fresh random nonce.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>> {
        let mut sealed = Vec::new();
        sealed
            .try_reserve_exact(OVERHEAD + plain.len())
            .map_err(|_| Error::no_memory(OVERHEAD + plain.len()))?;
        sealed.resize(OVERHEAD, 0);
        getrandom::fill(&mut sealed[..NONCE_LEN]).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("the operating system's random generator failed: {e}"),
            )
        })?;
        sealed.extend_from_slice(plain);
        let (head, body) = sealed.split_at_mut(OVERHEAD);
        let nonce = Nonce::clone_from_slice(&head[..NONCE_LEN]);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce, b"", body)
            .map_err(|_| Error::new(ErrorKind::TooLarge, "the value is too large to seal"))?;
        head[NONCE_LEN..].copy_from_slice(&tag);
        Ok(sealed)
    }

    /// The plaintext of a sealed value; `Corrupt` ("authentication failed") when it was
    /// changed, sealed with another key, or is too short to be sealed at all. The
    /// plaintext is zeroed when dropped.
    pub fn open(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let failed = || {
            Error::new(
                ErrorKind::Corrupt,
                "authentication failed: the stored value was changed or sealed with another key",
            )
        };
        if sealed.len() < OVERHEAD {
            return Err(failed());
        }
        let (head, body) = sealed.split_at(OVERHEAD);
        let nonce = Nonce::from_slice(&head[..NONCE_LEN]);
        let tag = Tag::from_slice(&head[NONCE_LEN..]);
        let mut plain = Zeroizing::new(Vec::new());
        plain
            .try_reserve_exact(body.len())
            .map_err(|_| Error::no_memory(body.len()))?;
        plain.extend_from_slice(body);
        self.cipher
            .decrypt_in_place_detached(nonce, b"", &mut plain, tag)
            .map_err(|_| failed())?;
        Ok(plain)
    }
}

/// A backend whose values are sealed in the inner backend.
pub struct EncryptedCache {
    inner: Arc<dyn Backend>,
    secret: SecretBox,
}

impl EncryptedCache {
    /// Wraps `inner`; `key` must be [`KEY_LEN`] bytes.
    pub fn new(inner: Arc<dyn Backend>, key: &[u8]) -> Result<EncryptedCache> {
        Ok(Self::from_parts(inner, SecretBox::new(key)?))
    }

    /// Wraps `inner` with a box made already.
    pub fn from_parts(inner: Arc<dyn Backend>, secret: SecretBox) -> EncryptedCache {
        EncryptedCache { inner, secret }
    }

    /// Runs a get-like call on the inner backend and hands the opened value to `visit`.
    /// A value that fails authentication is never handed out; `on_damage` runs (to
    /// remove it) and the call fails with `Corrupt`.
    fn read(
        &self,
        visit: &mut Visit,
        call: impl FnOnce(&mut Visit) -> Result<bool>,
        on_damage: impl FnOnce() -> Result<()>,
    ) -> Result<bool> {
        let mut opened: Option<Result<(Zeroizing<Vec<u8>>, u32)>> = None;
        let found = call(&mut |sealed, flags| {
            opened = Some(self.secret.open(sealed).map(|plain| (plain, flags)));
        })?;
        match opened {
            Some(Ok((plain, flags))) if found => {
                visit(&plain, flags);
                Ok(true)
            }
            Some(Err(e)) if found => {
                let _ = on_damage();
                Err(e)
            }
            _ => Ok(false),
        }
    }
}

impl Backend for EncryptedCache {
    fn set_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<()> {
        let sealed = self.secret.seal(value)?;
        self.inner.set_flagged(key, &sealed, ttl, flags)
    }

    fn get_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        self.read(
            visit,
            |v| self.inner.get_flagged(key, v),
            || self.inner.delete(key),
        )
    }

    fn pop_flagged(&self, key: &[u8], visit: &mut Visit) -> Result<bool> {
        // The pop already removed a damaged value.
        self.read(visit, |v| self.inner.pop_flagged(key, v), || Ok(()))
    }

    // What encryption does not change: keys, counts and lifetime.
    crate::backend::forward_to_inner!(inner: has, delete, clear, len, stats, save, close);

    /// The decision sees the opened value and its answer is sealed. A stored value that
    /// fails authentication fails the update with `Corrupt` and is removed, as a get
    /// removes it (the contract: such a value is removed, never used).
    fn update(&self, key: &[u8], decide: &mut Decide) -> Result<()> {
        let mut damaged = false;
        let updated = self.inner.update(key, &mut |current| {
            let opened = match current {
                Some(c) => Some((
                    self.secret.open(c.value).inspect_err(|_| damaged = true)?,
                    c.flags,
                )),
                None => None,
            };
            let current = opened.as_ref().map(|(value, flags)| Current {
                value,
                flags: *flags,
            });
            Ok(match decide(current)? {
                Change::Keep => Change::Keep,
                Change::Put { value, flags, ttl } => Change::Put {
                    value: self.secret.seal(&value)?,
                    flags,
                    ttl,
                },
            })
        });
        if damaged {
            let _ = self.inner.delete(key);
        }
        updated
    }

    fn ttl(&self, key: &[u8]) -> Result<Option<Remaining>> {
        self.inner.ttl(key)
    }

    fn key_page(&self, prefix: &[u8], after: Option<&[u8]>) -> Result<KeyPage> {
        self.inner.key_page(prefix, after)
    }

    fn purge_expired(&self) -> Result<u64> {
        self.inner.purge_expired()
    }

    fn delete_counted(&self, key: &[u8]) -> Result<bool> {
        self.inner.delete_counted(key)
    }

    fn add_flagged(&self, key: &[u8], value: &[u8], ttl: Ttl, flags: u32) -> Result<bool> {
        let sealed = self.secret.seal(value)?;
        self.inner.add_flagged(key, &sealed, ttl, flags)
    }

    fn touch(&self, key: &[u8], ttl: Ttl) -> Result<bool> {
        self.inner.touch(key, ttl)
    }

    /// Every value that fails authentication is removed (not only the last one seen),
    /// and the call fails with `Corrupt`.
    fn get_many(&self, keys: &[&[u8]], visit: &mut VisitMany) -> Result<()> {
        let mut damaged = Vec::new();
        let mut error = None;
        self.inner.get_many(
            keys,
            &mut |i, sealed, flags| match self.secret.open(sealed) {
                Ok(plain) => visit(i, &plain, flags),
                Err(e) => {
                    damaged.push(keys[i]);
                    error.get_or_insert(e);
                }
            },
        )?;
        if !damaged.is_empty() {
            let _ = self.inner.delete_many(&damaged);
        }
        error.map_or(Ok(()), Err)
    }

    fn set_many(&self, entries: &[EntryRef]) -> Result<()> {
        let sealed: Vec<Vec<u8>> = entries
            .iter()
            .map(|e| self.secret.seal(e.value))
            .collect::<Result<_>>()?;
        let entries: Vec<EntryRef> = entries
            .iter()
            .zip(&sealed)
            .map(|(e, value)| EntryRef { value, ..*e })
            .collect();
        self.inner.set_many(&entries)
    }

    fn delete_many(&self, keys: &[&[u8]]) -> Result<u64> {
        self.inner.delete_many(keys)
    }

    fn keys(&self, prefix: &[u8], visit: &mut KeyVisit) -> Result<()> {
        self.inner.keys(prefix, visit)
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64> {
        self.inner.delete_prefix(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryCache;

    fn cache() -> EncryptedCache {
        EncryptedCache::new(Arc::new(MemoryCache::new(0)), &[7; KEY_LEN]).unwrap()
    }

    #[test]
    fn round_trips_and_stores_only_sealed_bytes() {
        let inner: Arc<dyn Backend> = Arc::new(MemoryCache::new(0));
        let c = EncryptedCache::new(inner.clone(), &[7; KEY_LEN]).unwrap();
        c.set_flagged(b"k", b"secret marker", Ttl::Never, 5)
            .unwrap();
        let mut got = None;
        assert!(c
            .get_flagged(b"k", &mut |v, f| got = Some((v.to_vec(), f)))
            .unwrap());
        assert_eq!(got, Some((b"secret marker".to_vec(), 5)));
        let raw = inner.get_vec(b"k").unwrap().unwrap();
        assert_eq!(raw.len(), OVERHEAD + 13);
        assert!(!raw.windows(6).any(|w| w == b"marker"));
        c.set(b"empty", b"", Ttl::Never).unwrap();
        assert_eq!(c.get_vec(b"empty").unwrap(), Some(Vec::new()));
    }

    #[test]
    fn a_changed_byte_or_another_key_is_corrupt_then_absent() {
        let inner: Arc<dyn Backend> = Arc::new(MemoryCache::new(0));
        let c = EncryptedCache::new(inner.clone(), &[7; KEY_LEN]).unwrap();
        c.set(b"k", b"value", Ttl::Never).unwrap();
        let mut raw = inner.get_vec(b"k").unwrap().unwrap();
        raw[OVERHEAD] ^= 1;
        inner.set(b"k", &raw, Ttl::Never).unwrap();
        let e = c.get_vec(b"k").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(
            e.message().contains("authentication failed"),
            "{}",
            e.message()
        );
        assert_eq!(c.get_vec(b"k").unwrap(), None, "removed");

        c.set(b"k", b"value", Ttl::Never).unwrap();
        let other = EncryptedCache::new(inner.clone(), &[8; KEY_LEN]).unwrap();
        assert_eq!(other.pop_vec(b"k").unwrap_err().kind(), ErrorKind::Corrupt);
        assert_eq!(inner.get_vec(b"k").unwrap(), None, "the pop removed it");

        inner.set(b"short", b"too short", Ttl::Never).unwrap();
        assert_eq!(c.get_vec(b"short").unwrap_err().kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn every_damaged_value_a_bulk_get_or_an_incr_meets_is_removed() {
        let inner: Arc<dyn Backend> = Arc::new(MemoryCache::new(0));
        let wrong = EncryptedCache::new(inner.clone(), &[9u8; 32]).unwrap();
        for k in [&b"a"[..], b"b", b"c", b"n"] {
            wrong.set(k, b"1", Ttl::Never).unwrap();
        }
        let c = EncryptedCache::new(inner.clone(), &[7u8; 32]).unwrap();
        let keys: [&[u8]; 3] = [b"a", b"b", b"c"];
        let e = c
            .get_many(&keys, &mut |_, _, _| panic!("never handed out"))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        for k in keys {
            assert!(!inner.has(k).unwrap(), "{k:?} left behind");
        }
        assert_eq!(
            c.incr(b"n", 1, Ttl::Never).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
        assert!(!inner.has(b"n").unwrap(), "the incr left the damaged value");
        assert_eq!(
            c.incr(b"n", 1, Ttl::Never).unwrap(),
            1,
            "a fresh counter after"
        );
    }

    #[test]
    fn nonces_are_fresh_and_keys_must_be_32_bytes() {
        let c = cache();
        let a = c.secret.seal(b"same").unwrap();
        let b = c.secret.seal(b"same").unwrap();
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
        assert_ne!(a, b);
        for len in [0, 16, 31, 33] {
            let e = SecretBox::new(&vec![1; len]).err().unwrap();
            assert_eq!(e.kind(), ErrorKind::InvalidArg);
        }
    }
}
