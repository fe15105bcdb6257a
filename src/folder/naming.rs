//! Folder names for keys: a reversible, filesystem-safe encoding.
//!
//! - The bytes `A-Z a-z 0-9 - _ . ~` stand for themselves, so plain ASCII keys stay
//!   readable (`user:42` is the folder `user%3A42`).
//! - Every other byte is `%` and two upper-case hex digits; so is a `.` that would start
//!   the name. A name therefore never starts with `.` (no `.`, `..`, nor the library's own
//!   `.tmp-` folders), never contains `/` or NUL, and is never empty.
//! - The empty key is the name `%`.
//! - A key whose encoding would pass [`MAX_NAME`] bytes is `%%` and the 32 hex digits of
//!   its 128-bit FNV-1a hash; the full key is kept in the entry's metadata and compared
//!   on every read, so two keys sharing a hash never read each other's value.

/// Longest encoded name used as is (file systems allow 255 bytes; some encrypting ones
/// fewer).
pub const MAX_NAME: usize = 200;

fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~')
}

/// The folder name of `key`.
pub fn encode(key: &[u8]) -> String {
    if key.is_empty() {
        return "%".to_owned();
    }
    let mut name = String::with_capacity(key.len());
    for (i, &b) in key.iter().enumerate() {
        if is_plain(b) && !(i == 0 && b == b'.') {
            name.push(b as char);
        } else {
            name.push('%');
            name.push(hex_digit(b >> 4));
            name.push(hex_digit(b & 0xf));
        }
        if name.len() > MAX_NAME {
            return hashed(key);
        }
    }
    name
}

/// The key a name stands for; None for hashed names (their key is in the metadata) and
/// for names this encoding never produces.
pub fn decode(name: &str) -> Option<Vec<u8>> {
    if name == "%" {
        return Some(Vec::new());
    }
    let bytes = name.as_bytes();
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = from_hex(*bytes.get(i + 1)?)?;
            let lo = from_hex(*bytes.get(i + 2)?)?;
            key.push(hi << 4 | lo);
            i += 3;
        } else if is_plain(b) && !(i == 0 && b == b'.') {
            key.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    // Only the canonical spelling counts (upper-case hex, no needless escapes).
    (encode(&key) == name).then_some(key)
}

/// True for a name that may hold an entry: an encoded key or a hashed one.
pub fn is_entry_name(name: &str) -> bool {
    match name.strip_prefix("%%") {
        Some(hash) => hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        None => decode(name).is_some(),
    }
}

fn hashed(key: &[u8]) -> String {
    format!("%%{:032x}", fnv1a_128(key))
}

/// FNV-1a, 128-bit: stable across versions and platforms, which a folder name must be.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ b as u128).wrapping_mul(PRIME))
}

fn hex_digit(n: u8) -> char {
    b"0123456789ABCDEF"[n as usize] as char
}

fn from_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_stay_readable() {
        assert_eq!(encode(b"user-42_v1.json~"), "user-42_v1.json~");
        assert_eq!(encode(b"user:42"), "user%3A42");
        assert_eq!(encode(b"a b"), "a%20b");
    }

    #[test]
    fn dangerous_keys_become_safe_names() {
        for (key, name) in [
            (&b""[..], "%"),
            (b".", "%2E"),
            (b"..", "%2E."),
            (b"../x", "%2E.%2Fx"),
            (b"/etc/passwd", "%2Fetc%2Fpasswd"),
            (b"a/b", "a%2Fb"),
            (b"\0", "%00"),
            (b"\xff\xfe", "%FF%FE"),
            (b".tmp-1", "%2Etmp-1"),
            (b"%", "%25"),
        ] {
            assert_eq!(encode(key), name);
            assert_eq!(decode(name).as_deref(), Some(key), "{name}");
            assert!(is_entry_name(name));
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let key: Vec<u8> = (0..=255).collect();
        let name = encode(&key[..60]);
        assert_eq!(decode(&name).unwrap(), &key[..60]);
        for b in 0..=255u8 {
            let name = encode(&[b, b]);
            assert!(!name.is_empty() && !name.starts_with('.'));
            assert!(!name.contains('/') && !name.contains('\0'));
            assert_eq!(decode(&name).unwrap(), [b, b]);
        }
    }

    #[test]
    fn long_keys_get_hashed_names() {
        let long = vec![b'a'; 10 * 1024];
        let name = encode(&long);
        assert!(name.starts_with("%%") && name.len() == 34, "{name}");
        assert_eq!(decode(&name), None);
        assert!(is_entry_name(&name));
        assert_eq!(encode(&long), name, "stable");
        assert_ne!(encode(&vec![b'b'; 10 * 1024]), name);
        assert_eq!(encode(&[b'a'; MAX_NAME]).len(), MAX_NAME);
        assert!(encode(&[0u8; MAX_NAME / 3 + 1]).starts_with("%%"));
    }

    #[test]
    fn foreign_names_are_not_entries() {
        for name in [
            ".",
            "..",
            ".tmp-1-2-3",
            "a%2",
            "a%zz",
            "a%2e",
            "%41",
            "x/y",
            "%%12",
        ] {
            assert!(!is_entry_name(name), "{name}");
        }
    }
}
