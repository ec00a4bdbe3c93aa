//! Commit markers: a manifest with a CRC32C, written atomically and durably.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{GraphIdentity, Manifest, MANIFEST_FORMAT};
use crate::EngineError;

const CRC_PREFIX: &str = "crc32c ";

pub(super) fn manifest_name(id: u64) -> String {
    format!("{id:020}.ckpt")
}

/// Why a commit marker cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// Not text.
    #[error("not UTF-8")]
    NotUtf8,
    /// Cut short (a crash while it was written, or damage).
    #[error("truncated: {0}")]
    Truncated(&'static str),
    /// The checksum line is not a checksum.
    #[error("bad checksum line")]
    BadChecksumLine,
    /// The bytes changed after they were written.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// The JSON is not a manifest.
    #[error("bad manifest: {0}")]
    Json(#[source] serde_json::Error),
    /// Written by a build with another manifest format.
    #[error("unsupported manifest format {0} (this build reads format {MANIFEST_FORMAT})")]
    Format(u32),
}

/// Encodes a manifest: JSON, a newline, `crc32c <hex of the JSON bytes>`, a newline.
pub fn encode_manifest(m: &Manifest) -> Result<Vec<u8>, EngineError> {
    let json = serde_json::to_vec_pretty(m).map_err(|source| EngineError::Encode {
        what: format!("manifest {}", m.id),
        source,
    })?;
    let mut out = json.clone();
    out.extend_from_slice(format!("\n{CRC_PREFIX}{:08x}\n", crc32c::crc32c(&json)).as_bytes());
    Ok(out)
}

/// Decodes and checks a manifest; the error says what is wrong.
pub fn decode_manifest(bytes: &[u8]) -> Result<Manifest, ManifestError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
    let body = text
        .strip_suffix('\n')
        .ok_or(ManifestError::Truncated("no final newline"))?;
    let (json, crc_line) = body
        .rsplit_once('\n')
        .ok_or(ManifestError::Truncated("no checksum line"))?;
    let crc_hex = crc_line
        .strip_prefix(CRC_PREFIX)
        .ok_or(ManifestError::Truncated("no checksum line"))?;
    let stored = u32::from_str_radix(crc_hex, 16).map_err(|_| ManifestError::BadChecksumLine)?;
    let computed = crc32c::crc32c(json.as_bytes());
    if computed != stored {
        return Err(ManifestError::Checksum { stored, computed });
    }
    // The format first: a manifest of another build may not parse as this build's.
    #[derive(serde::Deserialize)]
    struct Format {
        format: u32,
    }
    let found: Format = serde_json::from_str(json).map_err(ManifestError::Json)?;
    if found.format != MANIFEST_FORMAT {
        return Err(ManifestError::Format(found.format));
    }
    serde_json::from_str(json).map_err(ManifestError::Json)
}

/// A data directory's identity file.
pub(super) fn identity_bytes(identity: &GraphIdentity) -> Result<Vec<u8>, EngineError> {
    serde_json::to_vec_pretty(identity).map_err(|source| EngineError::Encode {
        what: "the graph identity".into(),
        source,
    })
}

pub(super) fn io(path: &Path, e: std::io::Error) -> EngineError {
    EngineError::Checkpoint(format!("{}: {e}", path.display()))
}

pub(super) fn sync_dir(path: &Path) -> Result<(), EngineError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(path, e))
}

/// Writes `bytes` to `path` atomically and durably: temporary file, fsync, rename, fsync of
/// the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// One marker file found in a data directory.
#[derive(Debug)]
pub struct MarkerFile {
    /// The file.
    pub path: PathBuf,
    /// Its manifest, or why it cannot be used.
    pub manifest: Result<Manifest, ManifestError>,
}

/// Marker files of the data directory at `dir`, newest first.
pub fn list_markers(dir: &Path) -> Result<Vec<MarkerFile>, EngineError> {
    let folder = dir.join("checkpoints");
    let mut out = Vec::new();
    let entries = match fs::read_dir(&folder) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(&folder, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| io(&folder, e))?.path();
        if path.extension().is_some_and(|e| e == "ckpt") {
            let manifest = fs::read(&path)
                .map_err(ManifestError::Read)
                .and_then(|b| decode_manifest(&b));
            out.push(MarkerFile { path, manifest });
        }
    }
    out.sort_by(|a, b| b.path.cmp(&a.path));
    Ok(out)
}
