//! Getting the CIFAR-10 binary files: use them if present, else unpack the archive if it is in
//! the data dir, else download it (curl, with its progress bar), check its MD5 and unpack it
//! (tar). Nothing half-done is left under the final names.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use md5::{Digest, Md5};

use super::cifar::{CIFAR10_DIR, TEST_FILE, TRAIN_FILES};
use super::DataError;

/// The official address of the binary version.
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
pub const CIFAR10_ARCHIVE: &str = "cifar-10-binary.tar.gz";
/// Environment variable naming another address (a mirror) for the same archive; the MD5 check
/// still applies.
pub const URL_ENV: &str = "ABLATE_CIFAR10_URL";

/// Makes sure `data_dir/cifar-10-batches-bin/` holds every file (sizes are checked when read).
pub fn ensure_cifar10(data_dir: &Path) -> Result<(), DataError> {
    let dir = data_dir.join(CIFAR10_DIR);
    let present = |f: &&str| dir.join(f).is_file();
    if TRAIN_FILES.iter().chain([&TEST_FILE]).all(|f| present(&f)) {
        return Ok(());
    }
    let archive = data_dir.join(CIFAR10_ARCHIVE);
    if !archive.is_file() {
        let url = std::env::var(URL_ENV).unwrap_or_else(|_| CIFAR10_URL.to_string());
        download(&url, &archive, CIFAR10_MD5, data_dir)?;
    }
    let found = md5_hex(&archive)?;
    if found != CIFAR10_MD5 {
        return Err(DataError::Checksum {
            file: archive,
            expected: CIFAR10_MD5.into(),
            found,
        });
    }
    unpack(&archive, data_dir)
}

/// Downloads `url` to `dest` through `dest.part`, and keeps it only if its MD5 is `md5`.
pub fn download(url: &str, dest: &Path, md5: &str, data_dir: &Path) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        file: data_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let part = dest.with_extension("gz.part");
    eprintln!("downloading {url} to {}", dest.display());
    let progress = if std::io::stderr().is_terminal() {
        "--progress-bar"
    } else {
        "--silent"
    };
    let status = Command::new("curl")
        .args(["--fail", "--location", "--show-error", progress])
        .args(["--retry", "2", "--connect-timeout", "20", "--output"])
        .arg(&part)
        .arg(url)
        .status();
    let failed = |message: String| {
        let _ = std::fs::remove_file(&part);
        DataError::Download {
            url: url.to_string(),
            dir: data_dir.to_path_buf(),
            message,
        }
    };
    match status {
        Err(e) => return Err(failed(format!("could not run curl: {e}"))),
        Ok(s) if !s.success() => return Err(failed(format!("curl failed ({s})"))),
        Ok(_) => {}
    }
    let found = md5_hex(&part)?;
    if found != md5 {
        let _ = std::fs::remove_file(&part);
        return Err(DataError::Checksum {
            file: PathBuf::from(url),
            expected: md5.into(),
            found,
        });
    }
    std::fs::rename(&part, dest).map_err(io)
}

/// Lower-case hex MD5 of a file.
pub fn md5_hex(file: &Path) -> Result<String, DataError> {
    let io = |source| DataError::Io {
        file: file.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(file).map_err(io)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Unpacks a .tar.gz into `dir` (tar), into a temp folder first so that a failure leaves no
/// partial `cifar-10-batches-bin/`.
pub fn unpack(archive: &Path, dir: &Path) -> Result<(), DataError> {
    let failed = |message: String| DataError::Unpack {
        archive: archive.to_path_buf(),
        message,
    };
    let tmp = dir.join(format!(".unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| failed(e.to_string()))?;
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(&tmp)
        .output()
        .map_err(|e| failed(format!("could not run tar: {e}")))?;
    let result = if !out.status.success() {
        Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    } else if !tmp.join(CIFAR10_DIR).is_dir() {
        Err(failed(format!("the archive has no {CIFAR10_DIR}/ folder")))
    } else {
        let target = dir.join(CIFAR10_DIR);
        let _ = std::fs::remove_dir_all(&target);
        std::fs::rename(tmp.join(CIFAR10_DIR), &target).map_err(|e| failed(e.to_string()))
    };
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ablate-dl-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn md5_of_known_strings() {
        let dir = temp("md5");
        let f = dir.join("x");
        std::fs::write(&f, b"").unwrap();
        assert_eq!(md5_hex(&f).unwrap(), "d41d8cd98f00b204e9800998ecf8427e");
        std::fs::write(&f, b"The quick brown fox jumps over the lazy dog").unwrap();
        assert_eq!(md5_hex(&f).unwrap(), "9e107d9d372bb6826bd81d3542a419d6");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A tiny archive served from a file:// address: fetched, checked, unpacked; a wrong MD5
    /// is refused and leaves nothing behind; an address that cannot be reached says where to
    /// put the files.
    #[test]
    fn download_checks_md5_and_unpacks() {
        let dir = temp("fetch");
        let src = dir.join("src");
        std::fs::create_dir_all(src.join(CIFAR10_DIR)).unwrap();
        std::fs::write(src.join(CIFAR10_DIR).join(TEST_FILE), b"records").unwrap();
        let tgz = dir.join("a.tar.gz");
        let ok = Command::new("tar")
            .arg("-czf")
            .arg(&tgz)
            .arg("-C")
            .arg(&src)
            .arg(CIFAR10_DIR)
            .status()
            .unwrap();
        assert!(ok.success());
        let url = format!("file://{}", tgz.display());
        let md5 = md5_hex(&tgz).unwrap();
        let data = dir.join("data");
        let dest = data.join(CIFAR10_ARCHIVE);

        let e = download(&url, &dest, "0123", &data)
            .unwrap_err()
            .to_string();
        assert!(e.contains("MD5") && e.contains("expected 0123"), "{e}");
        assert!(!dest.exists() && !dest.with_extension("gz.part").exists());

        download(&url, &dest, &md5, &data).unwrap();
        unpack(&dest, &data).unwrap();
        let got = std::fs::read(data.join(CIFAR10_DIR).join(TEST_FILE)).unwrap();
        assert_eq!(got, b"records");

        let e = download("file:///nonexistent/x.tar.gz", &dest, &md5, &data)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("could not download") && e.contains(CIFAR10_DIR) && e.contains("--data-dir"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
