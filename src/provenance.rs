//! Where and from what code a run ran: recorded in every run's status.json.

/// The host name, for status records.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match ok {
        true if end > 0 => String::from_utf8_lossy(&buf[..end]).into_owned(),
        _ => "unknown".into(),
    }
}

/// The git commit this binary was built from (`-dirty` with uncommitted changes).
pub const GIT_COMMIT: &str = env!("ABLATE_GIT_COMMIT");
