//! Storage format version 2: where an actor's files live in the store.
//! `docs/storage-format.md` is the prose version; `tests/format_fixture.rs` freezes it.
//!
//! ```text
//! actor prefix   'a' ++ actor_id ++ 0x00
//! generation     prefix ++ 'g'                      -> u64 big-endian
//! file metadata  prefix ++ tag                      -> version u8 (1 or 2) ++ size u64 big-endian
//! file chunk     prefix ++ tag ++ index u64 BE      -> CHUNK_BYTES raw bytes, or (version 2)
//!                                                      0x01 ++ the lz4 block of the chunk,
//!                                                      when that is shorter than CHUNK_BYTES
//! tags           'm' main database, 'j' rollback journal
//! ```
//! Actor ids never contain 0x00, so one actor's keys never interleave with another's and key
//! order is actor-id order. A file's metadata key sorts before its chunks, and chunk keys sort
//! by index because the index is big-endian. A chunk's value length says how it is stored
//! (exactly `CHUNK_BYTES`: raw, as version 1 wrote every chunk; shorter: compressed), so a
//! store written by version 1 reads as it is and its chunks are compressed as they are
//! rewritten: no migration step.

use crate::actor_id::ActorId;

/// Bytes per stored chunk; equal to the SQLite page size, so one page is one value.
pub const CHUNK_BYTES: usize = 4096;
/// The format version written into every file's metadata.
pub const FORMAT_VERSION: u8 = 2;
/// The first byte of a compressed chunk value: an lz4 block follows.
const CHUNK_LZ4: u8 = 1;
const META_BYTES: usize = 9;

/// A file of an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileTag {
    Main,
    Journal,
}

impl FileTag {
    fn byte(self) -> u8 {
        match self {
            Self::Main => b'm',
            Self::Journal => b'j',
        }
    }
}

/// Index of a chunk in a file (byte offset / `CHUNK_BYTES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkIndex(pub u64);

impl ChunkIndex {
    pub fn of_offset(offset: u64) -> Self {
        Self(offset / CHUNK_BYTES as u64)
    }

    pub fn start_offset(self) -> u64 {
        self.0 * CHUNK_BYTES as u64
    }
}

/// Number of chunks needed to hold `size` bytes.
pub fn chunks_for(size: u64) -> u64 {
    size.div_ceil(CHUNK_BYTES as u64)
}

pub fn actor_prefix(actor: &ActorId) -> Vec<u8> {
    let mut key = Vec::with_capacity(actor.as_str().len() + 11);
    key.push(b'a');
    key.extend_from_slice(actor.as_str().as_bytes());
    key.push(0);
    key
}

/// The actor a store key belongs to: the id between the leading `'a'` and the first `0x00`
/// (the whole rest when there is none, as for a scan bound). `None` when the key is not an
/// actor's key or the id is invalid.
pub fn actor_of_key(key: &[u8]) -> Option<ActorId> {
    let rest = key.strip_prefix(b"a")?;
    let id = rest.split(|b| *b == 0).next().unwrap_or(rest);
    ActorId::new(std::str::from_utf8(id).ok()?).ok()
}

/// The keys read (or claimed) when an actor is opened: its generation, both files' metadata
/// and the journal's first chunk (whether the journal is hot).
pub fn open_keys(actor: &ActorId) -> [Vec<u8>; 4] {
    [
        generation_key(actor),
        meta_key(actor, FileTag::Main),
        meta_key(actor, FileTag::Journal),
        chunk_key(actor, FileTag::Journal, ChunkIndex(0)),
    ]
}

/// The key, on the shard an actor moved to, that names the shard it moved from until that
/// shard's copy is deleted (only with several PostgreSQL shards): `'r' ++ actor prefix`.
pub fn relocation_key(actor: &ActorId) -> Vec<u8> {
    let mut key = vec![b'r'];
    key.extend_from_slice(&actor_prefix(actor));
    key
}

/// Places every key of an actor (and its relocation key) by the actor's id, so an actor's
/// keys share one shard: the group is the actor prefix (after the `'r'` of a relocation key).
pub fn placement(key: &[u8]) -> Option<crate::kv::Placed<'_>> {
    let skip = usize::from(key.first() == Some(&b'r'));
    let body = key[skip..].strip_prefix(b"a")?;
    let id_len = body.iter().position(|b| *b == 0)?;
    Some(crate::kv::Placed { group: &key[..skip + 1 + id_len + 1], name: &body[..id_len] })
}

/// The first key after every key of `actor`.
pub fn actor_end(actor: &ActorId) -> Vec<u8> {
    let mut key = actor_prefix(actor);
    *key.last_mut().expect("prefix is not empty") = 1;
    key
}

pub fn generation_key(actor: &ActorId) -> Vec<u8> {
    let mut key = actor_prefix(actor);
    key.push(b'g');
    key
}

pub fn meta_key(actor: &ActorId, tag: FileTag) -> Vec<u8> {
    let mut key = actor_prefix(actor);
    key.push(tag.byte());
    key
}

pub fn chunk_key(actor: &ActorId, tag: FileTag, index: ChunkIndex) -> Vec<u8> {
    let mut key = meta_key(actor, tag);
    key.extend_from_slice(&index.0.to_be_bytes());
    key
}

/// `[start, end)` covering a file's chunks from `from` on.
pub fn chunk_range(actor: &ActorId, tag: FileTag, from: ChunkIndex) -> (Vec<u8>, Vec<u8>) {
    (chunk_key(actor, tag, from), file_end(actor, tag))
}

/// `[start, end)` covering a whole file: metadata and chunks.
pub fn file_range(actor: &ActorId, tag: FileTag) -> (Vec<u8>, Vec<u8>) {
    (meta_key(actor, tag), file_end(actor, tag))
}

/// `[start, end)` covering both files of the actor (journal, then main), not its generation.
pub fn files_range(actor: &ActorId) -> (Vec<u8>, Vec<u8>) {
    (meta_key(actor, FileTag::Journal), file_end(actor, FileTag::Main))
}

fn file_end(actor: &ActorId, tag: FileTag) -> Vec<u8> {
    let mut key = actor_prefix(actor);
    key.push(tag.byte() + 1);
    key
}

/// Per-file metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMeta {
    pub size_bytes: u64,
}

/// A stored value that this version cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable stored value: {0}")]
pub struct FormatError(pub &'static str);

impl FileMeta {
    pub fn encode(self) -> Vec<u8> {
        let mut value = Vec::with_capacity(META_BYTES);
        value.push(FORMAT_VERSION);
        value.extend_from_slice(&self.size_bytes.to_be_bytes());
        value
    }

    pub fn decode(value: &[u8]) -> Result<Self, FormatError> {
        match value {
            [1 | FORMAT_VERSION, size @ ..] if size.len() == 8 => {
                let size_bytes = u64::from_be_bytes(size.try_into().expect("8 bytes"));
                Ok(Self { size_bytes })
            }
            [1 | FORMAT_VERSION, ..] => Err(FormatError("file metadata has the wrong length")),
            _ => Err(FormatError("file metadata has an unknown format version")),
        }
    }
}

/// A chunk's stored value: compressed when that saves bytes (a page that holds one row is
/// mostly zeros; a page of random blobs does not shrink), else the raw chunk.
pub fn encode_chunk(chunk: &[u8]) -> Vec<u8> {
    assert_eq!(chunk.len(), CHUNK_BYTES, "a chunk is one page");
    // lz4 wants room for its worst case (incompressible input grows a little).
    let mut block = [0u8; CHUNK_BYTES + CHUNK_BYTES / 8];
    match lz4_flex::block::compress_into(chunk, &mut block) {
        Ok(len) if len + 1 < CHUNK_BYTES => [&[CHUNK_LZ4][..], &block[..len]].concat(),
        _ => chunk.to_vec(),
    }
}

/// The chunk a stored value holds (see [`encode_chunk`]; version 1's raw chunks included).
pub fn decode_chunk(value: &[u8]) -> Result<Box<[u8]>, FormatError> {
    if value.len() == CHUNK_BYTES {
        return Ok(value.into());
    }
    let [CHUNK_LZ4, block @ ..] = value else { return Err(FormatError("chunk has the wrong length")) };
    let mut chunk = vec![0u8; CHUNK_BYTES].into_boxed_slice();
    match lz4_flex::block::decompress_into(block, &mut chunk) {
        Ok(CHUNK_BYTES) => Ok(chunk),
        _ => Err(FormatError("a compressed chunk does not hold one page")),
    }
}

/// Ownership generation of an actor: bumped by every new owner's first write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Generation(pub u64);

impl Generation {
    pub fn encode(self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }

    pub fn decode(value: &[u8]) -> Result<Self, FormatError> {
        let bytes: [u8; 8] = value.try_into().map_err(|_| FormatError("generation is not 8 bytes"))?;
        Ok(Self(u64::from_be_bytes(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically_and_stay_inside_the_actor() {
        let a = ActorId::new("ab").unwrap();
        let b = ActorId::new("abc").unwrap();
        let keys = [
            actor_prefix(&a),
            generation_key(&a),
            meta_key(&a, FileTag::Journal),
            chunk_key(&a, FileTag::Journal, ChunkIndex(u64::MAX)),
            meta_key(&a, FileTag::Main),
            chunk_key(&a, FileTag::Main, ChunkIndex(1)),
            chunk_key(&a, FileTag::Main, ChunkIndex(256)),
            chunk_key(&a, FileTag::Main, ChunkIndex(u64::MAX)),
            actor_end(&a),
            actor_prefix(&b),
        ];
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        let (start, end) = file_range(&a, FileTag::Main);
        assert!(
            start <= chunk_key(&a, FileTag::Main, ChunkIndex(u64::MAX))
                && end > chunk_key(&a, FileTag::Main, ChunkIndex(u64::MAX))
        );
        assert!(end <= actor_end(&a));
        let (start, end) = files_range(&a);
        assert!(generation_key(&a) < start && start == file_range(&a, FileTag::Journal).0);
        assert!(end == file_range(&a, FileTag::Main).1);
    }

    #[test]
    fn keys_name_their_actor() {
        let a = ActorId::new("a.b-c_9").unwrap();
        for key in [
            actor_prefix(&a),
            generation_key(&a),
            meta_key(&a, FileTag::Main),
            chunk_key(&a, FileTag::Journal, ChunkIndex(u64::MAX)),
            [b"a", a.as_str().as_bytes()].concat(),
        ] {
            assert_eq!(actor_of_key(&key), Some(a.clone()), "{key:?}");
        }
        for key in [&b""[..], b"a", b"a\0g", b"b1\0", b"a.x\0", b"a\xff\0", b"ax y\0"] {
            assert_eq!(actor_of_key(key), None, "{key:?}");
        }
    }

    #[test]
    fn meta_round_trips_and_rejects_unknown_versions() {
        let meta = FileMeta { size_bytes: 123_456 };
        assert_eq!(FileMeta::decode(&meta.encode()), Ok(meta));
        assert!(FileMeta::decode(&[3, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(FileMeta::decode(&[2, 0]).is_err());
        assert_eq!(Generation::decode(&Generation(7).encode()), Ok(Generation(7)));
    }

    #[test]
    fn chunks_compress_when_that_saves_bytes_and_decode_either_way() {
        let mut sparse = vec![0u8; CHUNK_BYTES];
        sparse[CHUNK_BYTES - 40..].copy_from_slice(&[7; 40]);
        let stored = encode_chunk(&sparse);
        assert!(stored.len() < 100 && stored[0] == CHUNK_LZ4, "{} bytes", stored.len());
        assert_eq!(*decode_chunk(&stored).unwrap(), *sparse);
        // Random bytes do not shrink: stored raw, as version 1 stored every chunk.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let noisy: Vec<u8> = (0..CHUNK_BYTES)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        assert_eq!(encode_chunk(&noisy), noisy);
        assert_eq!(*decode_chunk(&noisy).unwrap(), *noisy);
        // Damaged values are errors, not panics or short pages.
        assert!(decode_chunk(&stored[..stored.len() - 1]).is_err());
        assert!(decode_chunk(&[CHUNK_LZ4]).is_err());
        assert!(decode_chunk(&[2, 0, 0]).is_err());
        assert!(decode_chunk(&[]).is_err());
        let mut wrong_size = vec![CHUNK_LZ4];
        wrong_size.extend(lz4_flex::block::compress(&[1u8; 100]));
        assert!(decode_chunk(&wrong_size).is_err());
    }

    #[test]
    fn version_1_metadata_still_reads() {
        let v1 = [vec![1u8], 8192u64.to_be_bytes().to_vec()].concat();
        assert_eq!(FileMeta::decode(&v1).unwrap().size_bytes, 8192);
        assert_eq!(FileMeta { size_bytes: 8192 }.encode()[0], FORMAT_VERSION);
        assert!(FileMeta::decode(&[3, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
