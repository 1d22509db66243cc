//! Moving a namespace's configs in and out in the Nacos console's zip format (rule C8 in
//! [`super`]): one entry `group/dataId` per config holding its content, and a `.meta.yml`
//! entry with one `group.dataId.app=appName` line per config that has an app (the last `.` of
//! the data id written as `~`, lines separated by CRLF). In memory only: the HTTP edge hands
//! in and takes out bytes.

use std::io::{Cursor, Read, Write};

use serde::{Deserialize, Serialize};
use zip::write::SimpleFileOptions;

use super::model::TYPES;
use super::{ConfigKey, MAX_CONTENT};

/// The metadata entry's name.
pub const META_ENTRY: &str = ".meta.yml";
/// Most configs one import may carry.
pub const MAX_ITEMS: usize = 10_000;
/// Most bytes one import may unpack to (a small zip must not unpack into gigabytes).
pub const MAX_UNPACKED: u64 = 64 * 1024 * 1024;

/// What to do with an imported config that already exists (Nacos's `SameConfigPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Policy {
    /// Stop at the first one: it and everything after it are not imported.
    #[default]
    Abort,
    /// Leave it as it is and go on.
    Skip,
    /// Replace it.
    Overwrite,
}

impl Policy {
    /// Reads `ABORT`, `SKIP` or `OVERWRITE` (any case); `None` for anything else.
    pub fn parse(v: &str) -> Option<Self> {
        match v.trim().to_ascii_uppercase().as_str() {
            "ABORT" => Some(Self::Abort),
            "SKIP" => Some(Self::Skip),
            "OVERWRITE" => Some(Self::Overwrite),
            _ => None,
        }
    }
}

/// One config of an export.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported<'a> {
    /// Group.
    pub group: &'a str,
    /// Data id.
    pub data_id: &'a str,
    /// Content.
    pub content: &'a str,
    /// `appName` (blank: none).
    pub app_name: &'a str,
}

/// One config read from an import.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// Where it goes.
    pub key: ConfigKey,
    /// Content.
    pub content: String,
    /// `appName` from the metadata, or `""`.
    pub app_name: String,
    /// Type, from the data id's extension.
    pub kind: String,
}

/// Why an import was refused, with Nacos's result codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// A `.meta.yml` line is not `name=value` (100002).
    #[error("the metadata (.meta.yml) is malformed: {0}")]
    Metadata(String),
    /// An entry is not `group/dataId`, or names a bad key or content (100003).
    #[error("invalid entry: {0}")]
    Invalid(String),
    /// The file is not a readable zip, or unpacks too large (100004).
    #[error("cannot read the file: {0}")]
    Unreadable(String),
    /// Nothing to import (100005).
    #[error("the file holds no config")]
    Empty,
}

impl ImportError {
    /// Nacos's `ResultCodeEnum` code.
    pub fn code(&self) -> u32 {
        match self {
            Self::Metadata(_) => 100_002,
            Self::Invalid(_) => 100_003,
            Self::Unreadable(_) => 100_004,
            Self::Empty => 100_005,
        }
    }
}

/// The metadata name of a config's app: `group.dataId.app`, the data id's last `.` as `~`.
fn meta_name(group: &str, data_id: &str) -> String {
    let id = match data_id.rfind('.') {
        Some(at) => format!("{}~{}", &data_id[..at], &data_id[at + 1..]),
        None => data_id.to_string(),
    };
    format!("{group}.{id}.app")
}

/// The type an imported config gets from its data id's extension (Nacos's
/// `FileTypeEnum.getFileTypeBySuffix`); `text` when unknown.
pub fn kind_of(data_id: &str) -> String {
    let ext = data_id
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "yml" => "yaml".to_string(),
        "htm" => "html".to_string(),
        e if TYPES.contains(&e) => e.to_string(),
        _ => "text".to_string(),
    }
}

/// The zip of `items` (and the metadata entry when some has an app).
pub fn export_zip(items: &[Exported<'_>]) -> std::io::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default();
    let mut meta = String::new();
    for item in items {
        zip.start_file(format!("{}/{}", item.group, item.data_id), options)?;
        zip.write_all(item.content.as_bytes())?;
        if !item.app_name.trim().is_empty() {
            meta.push_str(&meta_name(item.group, item.data_id));
            meta.push('=');
            meta.push_str(item.app_name);
            meta.push_str("\r\n");
        }
    }
    if !meta.is_empty() {
        zip.start_file(META_ENTRY, options)?;
        zip.write_all(meta.as_bytes())?;
    }
    Ok(zip.finish()?.into_inner())
}

/// Reads an export's zip into configs of `tenant` (keys checked, contents checked, sizes
/// bounded); entries in zip order.
pub fn read_zip(bytes: &[u8], tenant: &str) -> Result<Vec<Imported>, ImportError> {
    let unreadable = |e: zip::result::ZipError| ImportError::Unreadable(e.to_string());
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(unreadable)?;
    if archive.len() > MAX_ITEMS + 1 {
        return Err(ImportError::Unreadable(format!(
            "more than {MAX_ITEMS} entries"
        )));
    }
    let mut budget = MAX_UNPACKED;
    let mut entries = Vec::new();
    let mut meta = None;
    for i in 0..archive.len() {
        let file = archive.by_index(i).map_err(unreadable)?;
        if file.is_dir() {
            continue;
        }
        let name = file.name().to_string();
        // Read at most the content limit (plus one byte to tell it was over), whatever the
        // entry's header claims.
        let mut data = Vec::new();
        file.take(MAX_CONTENT as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|e| ImportError::Unreadable(e.to_string()))?;
        if data.len() > MAX_CONTENT {
            return Err(ImportError::Invalid(format!(
                "{name}: over the {MAX_CONTENT}-byte content limit"
            )));
        }
        budget = budget.checked_sub(data.len() as u64).ok_or_else(|| {
            ImportError::Unreadable(format!("unpacks to more than {MAX_UNPACKED} bytes"))
        })?;
        let text = String::from_utf8(data)
            .map_err(|_| ImportError::Invalid(format!("{name}: content is not UTF-8")))?;
        if name == META_ENTRY {
            meta = Some(text);
        } else {
            entries.push((name, text));
        }
    }
    let mut apps = std::collections::HashMap::new();
    for line in meta
        .iter()
        .flat_map(|m| m.split("\r\n"))
        .filter(|l| !l.is_empty())
    {
        match line.split('=').collect::<Vec<_>>()[..] {
            [name, app] => {
                apps.insert(name.to_string(), app.to_string());
            }
            _ => return Err(ImportError::Metadata(line.to_string())),
        }
    }
    let mut out = Vec::with_capacity(entries.len());
    for (name, content) in entries {
        let (group, data_id) = match name.split('/').collect::<Vec<_>>()[..] {
            [g, d] => (g, d),
            _ => {
                return Err(ImportError::Invalid(format!(
                    "{name}: expected group/dataId"
                )))
            }
        };
        let key = ConfigKey::new(data_id, group, Some(tenant))
            .map_err(|e| ImportError::Invalid(format!("{name}: {e}")))?;
        if content.trim().is_empty() {
            return Err(ImportError::Invalid(format!("{name}: content is blank")));
        }
        out.push(Imported {
            app_name: apps
                .get(&meta_name(group, data_id))
                .cloned()
                .unwrap_or_default(),
            kind: kind_of(data_id),
            key,
            content,
        });
    }
    if out.is_empty() {
        return Err(ImportError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c8_an_export_reads_back_with_its_apps_and_types() {
        let items = [
            Exported {
                group: "G",
                data_id: "app.yaml",
                content: "a: 1",
                app_name: "shop",
            },
            Exported {
                group: "DEFAULT_GROUP",
                data_id: "plain",
                content: "配置 ünïcode",
                app_name: "",
            },
        ];
        let zip = export_zip(&items).unwrap();
        let back = read_zip(&zip, "ns-1").unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(
            back[0].key,
            ConfigKey::new("app.yaml", "G", Some("ns-1")).unwrap()
        );
        assert_eq!(
            (
                back[0].content.as_str(),
                back[0].app_name.as_str(),
                back[0].kind.as_str()
            ),
            ("a: 1", "shop", "yaml")
        );
        assert_eq!(
            (back[1].content.as_str(), back[1].kind.as_str()),
            ("配置 ünïcode", "text")
        );
        assert_eq!(meta_name("G", "app.yaml"), "G.app~yaml.app");
        assert_eq!(kind_of("x.YML"), "yaml");
        assert_eq!(kind_of("x.properties"), "properties");
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            zip.start_file(*name, SimpleFileOptions::default()).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn c8_bad_files_are_refused_with_nacos_codes() {
        let cases: [(Vec<u8>, u32); 7] = [
            (b"not a zip".to_vec(), 100_004),
            (zip_of(&[]), 100_005),
            (zip_of(&[("no-group", b"x")]), 100_003),
            (zip_of(&[("G/a/b", b"x")]), 100_003),
            (zip_of(&[("G/bad id", b"x")]), 100_003),
            (zip_of(&[("G/a", b"  ")]), 100_003),
            (
                zip_of(&[("G/a", b"x"), (META_ENTRY, b"G.a.app=x=y")]),
                100_002,
            ),
        ];
        for (bytes, code) in cases {
            let err = read_zip(&bytes, "").unwrap_err();
            assert_eq!(err.code(), code, "{err}");
        }
        let big = vec![b'x'; MAX_CONTENT + 1];
        assert_eq!(
            read_zip(&zip_of(&[("G/a", &big)]), "").unwrap_err().code(),
            100_003
        );
    }

    #[test]
    fn c8_policies_parse_like_nacos() {
        assert_eq!(Policy::parse("overwrite"), Some(Policy::Overwrite));
        assert_eq!(Policy::parse("SKIP"), Some(Policy::Skip));
        assert_eq!(Policy::parse("ABORT"), Some(Policy::Abort));
        assert_eq!(Policy::parse("merge"), None);
    }
}
