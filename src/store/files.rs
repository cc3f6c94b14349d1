//! Where video files live: `videos/<id>/original.<ext>` beside the database with its
//! thumbnails and web rendition, and `tmp/` for uploads and renditions in flight. Paths are
//! built from record ids only, never from request input.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A file in `tmp/`, removed when dropped however the work on it ends, unless it was moved
/// into place and marked `kept`.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    kept: bool,
}

impl TempFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// It was renamed into place: there is nothing left to remove.
    pub fn kept(&mut self) {
        self.kept = true;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[derive(Debug, Clone)]
pub struct VideoFiles {
    root: PathBuf,
    temp: PathBuf,
}

impl VideoFiles {
    pub fn new(data_dir: &Path) -> io::Result<VideoFiles> {
        let files = VideoFiles { root: data_dir.join("videos"), temp: data_dir.join("tmp") };
        fs::create_dir_all(&files.root)?;
        fs::create_dir_all(&files.temp)?;
        Ok(files)
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub fn original(&self, id: &str, ext: &str) -> PathBuf {
        self.dir(id).join(format!("original.{ext}"))
    }

    /// `size` is `card` or `poster`.
    pub fn thumbnail(&self, id: &str, size: &str) -> PathBuf {
        self.dir(id).join(format!("thumbnail-{size}.jpg"))
    }

    /// The web rendition, when the original does not play in browsers as it is.
    pub fn rendition(&self, id: &str) -> PathBuf {
        self.dir(id).join("web.mp4")
    }

    /// The scrub previews: the sheet of frames and its WebVTT cues.
    pub fn preview_sheet(&self, id: &str) -> PathBuf {
        self.dir(id).join("previews.jpg")
    }

    pub fn preview_cues(&self, id: &str) -> PathBuf {
        self.dir(id).join("previews.vtt")
    }

    /// A fresh file in flight: an upload, a rendition, what the media child hands back.
    pub fn temp_file(&self) -> TempFile {
        TempFile { path: self.temp.join(format!("{}.part", super::new_id())), kept: false }
    }

    /// Bytes free for the data dir's filesystem (what an unprivileged writer may use).
    pub fn available_space(&self) -> io::Result<u64> {
        fs4::available_space(&self.root)
    }

    /// Size of the data dir's filesystem, in bytes.
    pub fn total_space(&self) -> io::Result<u64> {
        fs4::total_space(&self.root)
    }

    /// Moves a complete, fsynced upload into place and makes the rename durable.
    pub fn commit(&self, temp: &Path, id: &str, ext: &str) -> io::Result<PathBuf> {
        let dir = self.dir(id);
        fs::create_dir_all(&dir)?;
        let target = self.original(id, ext);
        fs::rename(temp, &target)?;
        fs::File::open(&dir)?.sync_all()?;
        fs::File::open(&self.root)?.sync_all()?;
        Ok(target)
    }

    /// Removes a video's directory. A job finishing meanwhile may rename its results in while
    /// the tree is walked (the directory is then not empty at the end): a few more walks.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        let mut walks = 0;
        loop {
            match fs::remove_dir_all(self.dir(id)) {
                Err(error) if error.kind() == io::ErrorKind::DirectoryNotEmpty && walks < 3 => walks += 1,
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => return Ok(()),
            }
        }
    }

    /// Removes every upload temp file; returns how many there were.
    pub fn clear_temp(&self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.temp)? {
            let path = entry?.path();
            if path.is_file() {
                fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Ids of the video directories present on disk.
    pub fn stored_ids(&self) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.root)? {
            let entry = entry?;
            if entry.file_type()?.is_dir()
                && let Some(name) = entry.file_name().to_str()
            {
                ids.push(name.to_owned());
            }
        }
        Ok(ids)
    }
}
