//! The files of an instance (or an erofs image): paths inside it, text or sized content.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// An instance's files, sorted by path, each path with where it was written.
#[derive(Debug, Clone, Default)]
pub struct Tree(pub Vec<(Spanned<String>, FileSpec)>);

impl Tree {
    /// The files, sorted by path.
    pub fn files(&self) -> impl Iterator<Item = (&str, &FileSpec)> {
        self.0.iter().map(|(path, file)| (path.value.as_str(), file))
    }

    /// Whether there are no files.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let files: std::collections::HashMap<Spanned<String>, FileSpec> = Deserialize::deserialize(deserializer)?;
        let mut files: Vec<_> = files.into_iter().collect();
        files.sort_by(|a, b| a.0.value.cmp(&b.0.value));
        Ok(Self(files))
    }
}

/// A file served over FUSE.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum FileSpec {
    /// Text content.
    Text(String),
    /// `size` bytes of the mock's pattern.
    Sized {
        /// Length in bytes, at most 256 MiB.
        size: super::bounded::AtMost<{ super::bounded::MAX_FILE_SIZE }>,
    },
}

/// By hand rather than `untagged`: serde's untagged enums replace the inner error (a size
/// past its bound) with "data did not match any variant", which names nothing.
impl<'de> Deserialize<'de> for FileSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FileSpec;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("the file's text, or `{ size: N }`")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<FileSpec, E> {
                Ok(FileSpec::Text(text.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<FileSpec, A::Error> {
                let mut size = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "size" if size.is_none() => size = Some(map.next_value()?),
                        "size" => return Err(serde::de::Error::duplicate_field("size")),
                        other => return Err(serde::de::Error::unknown_field(other, &["size"])),
                    }
                }
                size.map(|size| FileSpec::Sized { size }).ok_or_else(|| serde::de::Error::missing_field("size"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
