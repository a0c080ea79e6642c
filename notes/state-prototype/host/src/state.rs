//! The host's keyed state, laid out as Sluice's `keyed.rs` lays out a key
//! group: entries back to back in one arena (`u32 key-len, key, u32 len,
//! value`) and an index of (hash, offset). A lookup touches the index and
//! one entry; a clone (a snapshot) is two memcpys. A value that changes
//! length is appended anew (the old bytes become dead).

use std::hash::BuildHasher;

use hashbrown::HashTable;

#[derive(Clone, Default)]
pub struct StateMap {
    index: HashTable<(u64, u32)>,
    arena: Vec<u8>,
    hasher: hashbrown::DefaultHashBuilder,
}

#[inline]
fn u32_at(b: &[u8], p: usize) -> usize {
    u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize
}

#[inline]
fn key_in(arena: &[u8], at: u32) -> &[u8] {
    let at = at as usize;
    let klen = u32_at(arena, at);
    &arena[at + 4..at + 4 + klen]
}

impl StateMap {
    #[inline]
    pub fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    pub fn key(&self, at: u32) -> &[u8] {
        key_in(&self.arena, at)
    }

    #[inline]
    pub fn value(&self, at: u32) -> &[u8] {
        let at = at as usize;
        let klen = u32_at(&self.arena, at);
        let vlen = u32_at(&self.arena, at + 4 + klen);
        &self.arena[at + 8 + klen..at + 8 + klen + vlen]
    }

    /// The entry of `key` (whose hash is `h`), if any.
    #[inline]
    pub fn find_hashed(&self, h: u64, key: &[u8]) -> Option<u32> {
        self.index
            .find(h, |&(eh, at)| eh == h && self.key(at) == key)
            .map(|&(_, at)| at)
    }

    #[inline]
    pub fn find(&self, key: &[u8]) -> Option<u32> {
        self.find_hashed(self.hash(key), key)
    }

    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.find(key).map(|at| self.value(at))
    }

    fn append(&mut self, key: &[u8], value: &[u8]) -> u32 {
        let at = self.arena.len() as u32;
        self.arena.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.arena.extend_from_slice(key);
        self.arena.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.arena.extend_from_slice(value);
        at
    }

    /// Overwrites the value of the entry at `at` (key hash `h`).
    #[inline]
    pub fn set_at(&mut self, h: u64, at: u32, value: &[u8]) {
        let a = at as usize;
        let klen = u32_at(&self.arena, a);
        let vlen = u32_at(&self.arena, a + 4 + klen);
        if vlen == value.len() {
            self.arena[a + 8 + klen..a + 8 + klen + vlen].copy_from_slice(value);
        } else {
            let key = self.key(at).to_vec();
            let new = self.append(&key, value);
            if let Some(e) = self.index.find_mut(h, |&(eh, ea)| eh == h && ea == at) {
                e.1 = new;
            }
        }
    }

    /// Inserts a key known to be absent.
    pub fn insert_new(&mut self, h: u64, key: &[u8], value: &[u8]) {
        let at = self.append(key, value);
        self.index.insert_unique(h, (h, at), |e| e.0);
    }

    pub fn put_hashed(&mut self, h: u64, key: &[u8], value: &[u8]) {
        match self.find_hashed(h, key) {
            Some(at) => self.set_at(h, at, value),
            None => self.insert_new(h, key, value),
        }
    }

    #[inline]
    pub fn put(&mut self, key: &[u8], value: &[u8]) {
        self.put_hashed(self.hash(key), key, value)
    }

    pub fn remove(&mut self, key: &[u8]) {
        let h = self.hash(key);
        let arena = &self.arena;
        if let Ok(e) = self.index.find_entry(h, |&(eh, at)| eh == h && key_in(arena, at) == key) {
            e.remove();
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Forgets every entry, keeping the memory.
    pub fn clear(&mut self) {
        self.index.clear();
        self.arena.clear();
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.index.iter().map(|&(_, at)| (self.key(at), self.value(at)))
    }
}
