//! Where a read puts the value it finds. A store hands a value it holds in memory as
//! bytes, and a value it keeps in a file of its own as that file, still unread: the
//! sink then decides where the bytes go. A caller's buffer (`cache_get_into`) has the
//! file read straight into it, or not read at all when it is too small; a buffer handed
//! to C (`cache_get`) keeps the bytes the file was read into. Either way a 200 MB value
//! costs 200 MB to read, not a copy and then another (issue 30 item 17).

use crate::error::Result;

/// A value a store keeps in a file of its own, not yet read.
pub trait ValueFile {
    /// Its size in bytes, as the store recorded it.
    fn size(&self) -> usize;

    /// Reads it into `dest`, which is exactly [`ValueFile::size`] bytes long. `Ok(false)`
    /// when the file is gone (a writer replaced the entry meanwhile: the store looks
    /// again); a file of another size is damage.
    fn read_into(&mut self, dest: &mut [u8]) -> Result<bool>;

    /// Reads it whole into a new buffer: `Ok(None)` when the file is gone.
    fn read(&mut self) -> Result<Option<Vec<u8>>>;
}

/// What a store's read hands the entry it finds to. Any `FnMut(value, flags, expires)`
/// is a sink that takes the bytes.
pub trait Sink {
    /// A value the store has in memory. `expires` is the Unix time the entry dies at,
    /// when the store keeps one (None: never, or not known to this store).
    fn take(&mut self, value: &[u8], flags: u32, expires: Option<f64>);

    /// A value kept in `file`. `Ok(false)` when the file is gone. This default reads it
    /// whole and takes the bytes.
    fn take_file(
        &mut self,
        file: &mut dyn ValueFile,
        flags: u32,
        expires: Option<f64>,
    ) -> Result<bool> {
        let Some(bytes) = file.read()? else {
            return Ok(false);
        };
        self.take(&bytes, flags, expires);
        Ok(true)
    }
}

impl<F: FnMut(&[u8], u32, Option<f64>) + ?Sized> Sink for F {
    fn take(&mut self, value: &[u8], flags: u32, expires: Option<f64>) {
        self(value, flags, expires)
    }
}

/// Copies `value` into the front of `buf` when it fits (`get_into`'s rule).
#[inline]
pub fn copy_if_fits(value: &[u8], buf: &mut [u8]) {
    if let Some(dest) = buf.get_mut(..value.len()) {
        dest.copy_from_slice(value);
    }
}

/// The caller's buffer of a `get_into`: a value that fits is copied (or read) into its
/// front; the size and flags of the value found are kept whether or not it fits.
pub struct Room<'a> {
    buf: &'a mut [u8],
    found: Option<(usize, u32)>,
}

impl<'a> Room<'a> {
    pub fn new(buf: &'a mut [u8]) -> Room<'a> {
        Room { buf, found: None }
    }

    /// The size and flags of the value taken, if one was.
    pub fn found(&self) -> Option<(usize, u32)> {
        self.found
    }
}

impl Sink for Room<'_> {
    fn take(&mut self, value: &[u8], flags: u32, _expires: Option<f64>) {
        copy_if_fits(value, self.buf);
        self.found = Some((value.len(), flags));
    }

    /// Read straight into the buffer; a file too large for it is not read at all (the
    /// caller learns the size and asks again with a larger buffer).
    fn take_file(
        &mut self,
        file: &mut dyn ValueFile,
        flags: u32,
        _expires: Option<f64>,
    ) -> Result<bool> {
        let len = file.size();
        if let Some(dest) = self.buf.get_mut(..len) {
            if !file.read_into(dest)? {
                return Ok(false);
            }
        }
        self.found = Some((len, flags));
        Ok(true)
    }
}

/// An owned copy of the value found, with its flags: what `cache_get` hands to C. A
/// value kept in a file is read into the buffer that is kept, never copied again.
#[derive(Default)]
pub struct Owned {
    found: Option<Result<(Vec<u8>, u32)>>,
}

impl Owned {
    /// The value and flags taken (None: nothing was); an allocation that failed while
    /// copying is `NoMemory`.
    pub fn into_found(self) -> Result<Option<(Vec<u8>, u32)>> {
        self.found.transpose()
    }
}

impl Sink for Owned {
    fn take(&mut self, value: &[u8], flags: u32, _expires: Option<f64>) {
        self.found = Some(crate::error::try_copy(value).map(|v| (v, flags)));
    }

    fn take_file(
        &mut self,
        file: &mut dyn ValueFile,
        flags: u32,
        _expires: Option<f64>,
    ) -> Result<bool> {
        let Some(bytes) = file.read()? else {
            return Ok(false);
        };
        self.found = Some(Ok((bytes, flags)));
        Ok(true)
    }
}
