//! The read-only tree the mock serves over FUSE: one directory per mounted instance (or the
//! instance itself at `/`), with files described by the instance's bootstrap.
//!
//! A real bootstrap is a RAFS image; the mock reads a JSON stand-in instead:
//! `{"mock_tree": {"etc/os-release": "NAME=x\n", "data/blob": {"size": 1048576}}}` (text
//! files, and files of a given size filled with a fixed byte pattern). Anything else is an
//! empty instance. Inode numbers are a hash of the path, so a successor that takes over the
//! FUSE connection numbers every node exactly as its predecessor did, without any state.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::abi::Attr;

/// `DT_DIR` and `DT_REG` for directory entries.
pub const DT_DIR: u32 = 4;
/// Regular file.
pub const DT_REG: u32 = 8;

/// The byte at `offset` of a pattern file.
pub fn pattern_byte(offset: u64) -> u8 {
    ((offset.wrapping_mul(31).wrapping_add(7)) % 251) as u8
}

#[derive(Debug, Clone)]
enum Content {
    Text(Arc<[u8]>),
    Pattern(u64),
}

impl Content {
    fn len(&self) -> u64 {
        match self {
            Self::Text(t) => t.len() as u64,
            Self::Pattern(n) => *n,
        }
    }
}

#[derive(Debug, Clone)]
enum Node {
    Dir(BTreeMap<String, u64>),
    File(Content),
}

/// The tree, by inode.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    nodes: BTreeMap<u64, (u64, Node)>,
}

/// The root's inode, fixed by FUSE.
pub const ROOT: u64 = 1;

/// A stable inode for a path: FNV-1a, kept away from 0 and the root's 1.
fn ino_of(path: &str) -> u64 {
    if path == "/" {
        return ROOT;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(2)
}

impl Tree {
    /// Builds the tree of `instances`: (in-FUSE mountpoint, bootstrap file).
    pub fn build<'a>(instances: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut tree = Self::default();
        tree.nodes.insert(ROOT, (ROOT, Node::Dir(BTreeMap::new())));
        for (mountpoint, bootstrap) in instances {
            let base = tree.ensure_dir(mountpoint);
            let files = std::fs::read_to_string(bootstrap)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|v| v.get("mock_tree").cloned());
            let Some(Value::Object(files)) = files else { continue };
            for (rel, spec) in files {
                let content = match spec {
                    Value::String(s) => Content::Text(Arc::from(s.into_bytes())),
                    Value::Object(o) => Content::Pattern(o.get("size").and_then(Value::as_u64).unwrap_or(0)),
                    _ => continue,
                };
                // A bootstrap names files inside its instance; `.` and `..` would make names
                // the kernel resolves itself.
                if rel.split('/').any(|c| c == "." || c == "..") {
                    continue;
                }
                let path = format!("{}/{}", base.trim_end_matches('/'), rel.trim_start_matches('/'));
                let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
                let parent = tree.ensure_dir(if dir.is_empty() { "/" } else { dir });
                let ino = ino_of(&path);
                tree.link(&parent, name, ino);
                tree.nodes.insert(ino, (ino_of(&parent), Node::File(content)));
            }
        }
        tree
    }

    /// Makes `path` and its ancestors directories; returns the normalised path.
    fn ensure_dir(&mut self, path: &str) -> String {
        let mut current = String::from("/");
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let child = if current == "/" { format!("/{part}") } else { format!("{current}/{part}") };
            let ino = ino_of(&child);
            if let std::collections::btree_map::Entry::Vacant(slot) = self.nodes.entry(ino) {
                slot.insert((ino_of(&current), Node::Dir(BTreeMap::new())));
                self.link(&current, part, ino);
            }
            current = child;
        }
        current
    }

    fn link(&mut self, dir: &str, name: &str, ino: u64) {
        if let Some((_, Node::Dir(entries))) = self.nodes.get_mut(&ino_of(dir)) {
            entries.insert(name.to_owned(), ino);
        }
    }

    /// A node's attributes.
    pub fn attr(&self, ino: u64) -> Option<Attr> {
        let (_, node) = self.nodes.get(&ino)?;
        Some(match node {
            Node::Dir(entries) => Attr { ino, size: 4096, mode: 0o040_755, nlink: 2 + entries.len() as u32 },
            Node::File(c) => Attr { ino, size: c.len(), mode: 0o100_444, nlink: 1 },
        })
    }

    /// The attributes of `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Option<Attr> {
        match self.nodes.get(&parent)? {
            (_, Node::Dir(entries)) => self.attr(*entries.get(name)?),
            _ => None,
        }
    }

    /// Up to `size` bytes of file `ino` from `offset`; `None` if it is not a file.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Option<Vec<u8>> {
        let (_, Node::File(content)) = self.nodes.get(&ino)? else { return None };
        let end = content.len().min(offset.saturating_add(u64::from(size)));
        if offset >= end {
            return Some(Vec::new());
        }
        Some(match content {
            Content::Text(t) => t[offset as usize..end as usize].to_vec(),
            Content::Pattern(_) => (offset..end).map(pattern_byte).collect(),
        })
    }

    /// Directory entries, `.` and `..` first: (inode, kind, name).
    pub fn entries(&self, ino: u64) -> Option<Vec<(u64, u32, String)>> {
        let (parent, Node::Dir(entries)) = self.nodes.get(&ino)? else { return None };
        let mut out = vec![(ino, DT_DIR, ".".to_owned()), (*parent, DT_DIR, "..".to_owned())];
        for (name, child) in entries {
            let kind = match self.nodes.get(child) {
                Some((_, Node::Dir(_))) => DT_DIR,
                _ => DT_REG,
            };
            out.push((*child, kind, name.clone()));
        }
        Some(out)
    }

    /// Number of nodes (for statfs).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_appear_under_their_mountpoints_with_stable_inodes() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("image.boot");
        std::fs::write(&boot, r#"{"mock_tree":{"etc/os-release":"NAME=x\n","data/blob":{"size":10}}}"#).unwrap();
        let boot = boot.to_str().unwrap();
        let tree = Tree::build([("/snap1", boot), ("/snap2", "/nonexistent")]);
        let snap1 = tree.lookup(ROOT, "snap1").unwrap();
        assert!(tree.lookup(ROOT, "snap2").is_some(), "an instance without a tree is an empty directory");
        let etc = tree.lookup(snap1.ino, "etc").unwrap();
        let release = tree.lookup(etc.ino, "os-release").unwrap();
        assert_eq!(tree.read(release.ino, 0, 100).unwrap(), b"NAME=x\n");
        assert_eq!(tree.read(release.ino, 5, 100).unwrap(), b"x\n");
        let blob = tree.lookup(tree.lookup(snap1.ino, "data").unwrap().ino, "blob").unwrap();
        assert_eq!(blob.size, 10);
        assert_eq!(tree.read(blob.ino, 8, 100).unwrap(), vec![pattern_byte(8), pattern_byte(9)]);
        let again = Tree::build([("/snap1", boot)]);
        assert_eq!(again.lookup(etc.ino, "os-release").unwrap().ino, release.ino, "a successor numbers nodes alike");
        let names: Vec<String> = tree.entries(ROOT).unwrap().into_iter().map(|(_, _, n)| n).collect();
        assert_eq!(names, [".", "..", "snap1", "snap2"]);
    }

    #[test]
    fn a_dedicated_instance_fills_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("b");
        std::fs::write(&boot, r#"{"mock_tree":{"hello":"hi","etc/os-release":"x"}}"#).unwrap();
        let tree = Tree::build([("/", boot.to_str().unwrap())]);
        assert_eq!(tree.read(tree.lookup(ROOT, "hello").unwrap().ino, 0, 10).unwrap(), b"hi");
        let etc = tree.lookup(ROOT, "etc").unwrap();
        assert_eq!(tree.read(tree.lookup(etc.ino, "os-release").unwrap().ino, 0, 10).unwrap(), b"x");
    }
}
