//! Arbitrary bytes as an actor id: `ActorId::new` accepts exactly the documented rule (1-128
//! bytes of `[A-Za-z0-9._-]`, no leading `.`); every store key of a valid id names it again
//! (`layout::actor_of_key`) and sorts inside the actor's range; arbitrary bytes as a store key
//! never panic the key parser; `Storage::list` with the text as a prefix lists only matching
//! actors, in order.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use roost::kv::MemoryStore;
use roost::vfs::layout::{self, ChunkIndex, FileTag};
use roost::{ActorId, Storage, StorageConfig};

fn documented_rule(s: &str) -> bool {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"._-".contains(&b);
    (1..=roost::ACTOR_ID_BYTES_MAX).contains(&s.len()) && s.bytes().all(ok) && !s.starts_with('.')
}

/// A storage holding a few actors, for `list`.
fn storage() -> &'static Storage {
    static STORAGE: OnceLock<Storage> = OnceLock::new();
    STORAGE.get_or_init(|| {
        let storage = Storage::new(Arc::new(MemoryStore::new()), StorageConfig::default()).unwrap();
        for id in ["a", "a-1", "a.b", "ab", "b_2", "Z", "0"] {
            let mut db = storage.open(&ActorId::new(id).unwrap()).unwrap();
            db.execute_script("CREATE TABLE t(x)").unwrap();
        }
        storage
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = layout::actor_of_key(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = ActorId::new(text);
    assert_eq!(parsed.is_ok(), documented_rule(text), "{text:?}: {parsed:?}");
    if let Ok(id) = &parsed {
        assert_eq!(id.as_str(), text);
        assert_eq!(id.to_string().parse::<ActorId>().as_ref(), Ok(id));
        let keys = [
            layout::actor_prefix(id),
            layout::generation_key(id),
            layout::meta_key(id, FileTag::Journal),
            layout::chunk_key(id, FileTag::Journal, ChunkIndex(0)),
            layout::chunk_key(id, FileTag::Journal, ChunkIndex(u64::MAX)),
            layout::meta_key(id, FileTag::Main),
            layout::chunk_key(id, FileTag::Main, ChunkIndex(1)),
            layout::chunk_key(id, FileTag::Main, ChunkIndex(u64::MAX)),
        ];
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        let end = layout::actor_end(id);
        for key in &keys {
            assert!(key.as_slice() < end.as_slice());
            assert_eq!(layout::actor_of_key(key).as_ref(), Some(id), "{key:?}");
        }
    }
    let after = parsed.as_ref().ok();
    let page = storage().list(text, after, 4).expect("listing a memory store");
    assert!(page.actors.len() <= 4);
    assert!(page.actors.windows(2).all(|w| w[0].0 < w[1].0));
    for (id, _) in &page.actors {
        assert!(id.as_str().starts_with(text), "{id} listed for prefix {text:?}");
        assert!(after.is_none_or(|after| id > after), "{id} listed after {after:?}");
    }
});
