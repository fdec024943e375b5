//! Receiving an NDJSON upload in bounded memory: split the streamed body into lines as it
//! arrives, and spool them to an anonymous temporary file until the whole body is in.
//!
//! Spooling first means the database transaction that stores the lines starts only after
//! the last byte arrived, so a slow client never holds a write lock (on SQLite: *the* write
//! lock) for the length of its upload. The file is unlinked from the start and vanishes with
//! its handle, even if the process is killed.

use std::io::SeekFrom;

use futures::{Stream, StreamExt};
use tokio::fs::File;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader, BufWriter};

use crate::model::{ImportLine, LineContent};

/// Largest accepted upload.
pub const MAX_UPLOAD_BYTES: usize = 64 * 1024 * 1024;
/// Longest line kept; a longer one becomes a failed row.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

const TOO_LONG: &str = "line is longer than 64 KiB";
const NOT_UTF8: &str = "line is not valid UTF-8";
const HAS_NUL: &str = "malformed JSON: line contains a NUL byte";

/// Why an upload could not be received.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The body is larger than [`MAX_UPLOAD_BYTES`].
    #[error("the upload is larger than {MAX_UPLOAD_BYTES} bytes")]
    TooLarge,
    /// The client's body stream failed (e.g. the connection dropped).
    #[error("the request body could not be read: {0}")]
    Body(String),
    /// The temporary spool file could not be written or read.
    #[error("spooling the upload failed: {0}")]
    Spool(#[from] std::io::Error),
}

/// Splits a byte stream into numbered lines, holding at most one line (capped at
/// [`MAX_LINE_BYTES`]) at a time. Blank lines are numbered but not emitted.
#[derive(Debug, Default)]
pub struct LineSplitter {
    current: Vec<u8>,
    overflowed: bool,
    blank: bool,
    line_no: i64,
    started: bool,
}

impl LineSplitter {
    /// A splitter at the start of a file.
    pub fn new() -> Self {
        Self {
            blank: true,
            ..Self::default()
        }
    }

    /// Feeds the next chunk; returns the lines it completed.
    pub fn push(&mut self, mut chunk: &[u8]) -> Vec<ImportLine> {
        let mut out = Vec::new();
        if !self.started && !chunk.is_empty() {
            self.started = true;
            // A UTF-8 byte-order mark is not content. (Split across chunks it is not seen;
            // the line then fails to parse, which is reported, not lost.)
            chunk = chunk.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(chunk);
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            self.take(&chunk[..end]);
            if let Some(line) = self.finish_line() {
                out.push(line);
            }
            chunk = &chunk[end + 1..];
        }
        self.take(chunk);
        out
    }

    /// Ends the file; returns its last line when it had no trailing newline.
    pub fn finish(mut self) -> Option<ImportLine> {
        let pending = !self.current.is_empty() || self.overflowed;
        if pending { self.finish_line() } else { None }
    }

    fn take(&mut self, bytes: &[u8]) {
        if self.blank && !bytes.iter().all(u8::is_ascii_whitespace) {
            self.blank = false;
        }
        if self.overflowed {
            return;
        }
        // One byte of slack for a `\r` that belongs to the line ending.
        if self.current.len() + bytes.len() > MAX_LINE_BYTES + 1 {
            self.overflowed = true;
            self.current = Vec::new();
        } else {
            self.current.extend_from_slice(bytes);
        }
    }

    fn finish_line(&mut self) -> Option<ImportLine> {
        self.line_no += 1;
        let mut bytes = std::mem::take(&mut self.current);
        let overflowed = std::mem::replace(&mut self.overflowed, false);
        let blank = std::mem::replace(&mut self.blank, true);
        if blank {
            return None;
        }
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let content = if overflowed || bytes.len() > MAX_LINE_BYTES {
            LineContent::Rejected(TOO_LONG.to_owned())
        } else {
            match String::from_utf8(bytes) {
                // JSON never holds a raw NUL, and PostgreSQL text cannot store one.
                Ok(text) if text.contains('\0') => LineContent::Rejected(HAS_NUL.to_owned()),
                Ok(text) => LineContent::Text(text),
                Err(_) => LineContent::Rejected(NOT_UTF8.to_owned()),
            }
        };
        Some(ImportLine {
            line_no: self.line_no,
            content,
        })
    }
}

/// An upload received in full: its non-blank lines, spooled to disk.
#[derive(Debug)]
pub struct Spool {
    file: BufReader<File>,
    total: i64,
}

impl Spool {
    /// Receives `body`, refusing it past [`MAX_UPLOAD_BYTES`].
    ///
    /// # Errors
    /// [`UploadError::TooLarge`], [`UploadError::Body`] when the stream fails, or
    /// [`UploadError::Spool`] when the temporary file does.
    pub async fn receive<S, B, E>(body: S) -> Result<Self, UploadError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        Self::receive_limited(body, MAX_UPLOAD_BYTES).await
    }

    async fn receive_limited<S, B, E>(mut body: S, limit: usize) -> Result<Self, UploadError>
    where
        S: Stream<Item = Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let file = tokio::task::spawn_blocking(tempfile::tempfile)
            .await
            .map_err(std::io::Error::other)??;
        let mut writer = BufWriter::new(File::from_std(file));
        let mut splitter = LineSplitter::new();
        let mut received = 0usize;
        let mut total = 0i64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
            let chunk = chunk.as_ref();
            received = received.saturating_add(chunk.len());
            if received > limit {
                return Err(UploadError::TooLarge);
            }
            for line in splitter.push(chunk) {
                write_frame(&mut writer, &line).await?;
                total += 1;
            }
        }
        if let Some(line) = splitter.finish() {
            write_frame(&mut writer, &line).await?;
            total += 1;
        }
        writer.flush().await?;
        let mut file = writer.into_inner();
        file.seek(SeekFrom::Start(0)).await?;
        Ok(Self {
            file: BufReader::new(file),
            total,
        })
    }

    /// How many non-blank lines the upload has.
    pub fn total(&self) -> i64 {
        self.total
    }

    /// Reads up to `max_lines` lines (stopping early past `max_bytes` of text), or an empty
    /// batch at the end.
    ///
    /// # Errors
    /// When the spool file cannot be read back.
    pub async fn next_batch(
        &mut self,
        max_lines: usize,
        max_bytes: usize,
    ) -> Result<Vec<ImportLine>, UploadError> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while batch.len() < max_lines && bytes < max_bytes {
            let Some(line) = read_frame(&mut self.file).await? else {
                break;
            };
            if let LineContent::Text(text) = &line.content {
                bytes += text.len();
            }
            batch.push(line);
        }
        Ok(batch)
    }
}

// Frame: line number (i64 LE), kind (0 text, 1 rejected), length (u32 LE), bytes.
async fn write_frame(writer: &mut BufWriter<File>, line: &ImportLine) -> std::io::Result<()> {
    let (kind, bytes) = match &line.content {
        LineContent::Text(text) => (0u8, text.as_bytes()),
        LineContent::Rejected(reason) => (1u8, reason.as_bytes()),
    };
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    writer.write_all(&line.line_no.to_le_bytes()).await?;
    writer.write_all(&[kind]).await?;
    writer.write_all(&len.to_le_bytes()).await?;
    writer.write_all(bytes).await
}

async fn read_frame(reader: &mut BufReader<File>) -> std::io::Result<Option<ImportLine>> {
    let mut header = [0u8; 13];
    match reader.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut line_no = [0u8; 8];
    line_no.copy_from_slice(&header[..8]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[9..]);
    let len = usize::try_from(u32::from_le_bytes(len)).map_err(std::io::Error::other)?;
    if len > MAX_LINE_BYTES {
        return Err(std::io::Error::other(
            "spool frame longer than a line can be",
        ));
    }
    let mut bytes = vec![0u8; len];
    reader.read_exact(&mut bytes).await?;
    let text = String::from_utf8(bytes).map_err(std::io::Error::other)?;
    let content = match header[8] {
        0 => LineContent::Text(text),
        _ => LineContent::Rejected(text),
    };
    Ok(Some(ImportLine {
        line_no: i64::from_le_bytes(line_no),
        content,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn text(line_no: i64, s: &str) -> ImportLine {
        ImportLine {
            line_no,
            content: LineContent::Text(s.to_owned()),
        }
    }

    fn rejected(line_no: i64, reason: &str) -> ImportLine {
        ImportLine {
            line_no,
            content: LineContent::Rejected(reason.to_owned()),
        }
    }

    fn split_all(chunks: &[&[u8]]) -> Vec<ImportLine> {
        let mut splitter = LineSplitter::new();
        let mut out = Vec::new();
        for chunk in chunks {
            out.extend(splitter.push(chunk));
        }
        out.extend(splitter.finish());
        out
    }

    #[test]
    fn lines_are_numbered_over_all_lines_and_blank_ones_are_skipped() {
        let lines = split_all(&[b"a\n\n  \t\nb\r\nc"]);
        assert_eq!(lines, vec![text(1, "a"), text(4, "b"), text(5, "c")]);
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let whole = b"first\n\nsecond line\r\n\xEF\xBB\xBFthird\n";
        let expected = split_all(&[whole]);
        for cut in 0..whole.len() {
            let (a, b) = whole.split_at(cut);
            assert_eq!(split_all(&[a, b]), expected, "cut at {cut}");
        }
        assert_eq!(expected.len(), 3);
    }

    #[test]
    fn a_leading_byte_order_mark_is_dropped() {
        assert_eq!(split_all(&[b"\xEF\xBB\xBFa\n"]), vec![text(1, "a")]);
    }

    #[test]
    fn a_trailing_newline_adds_no_line() {
        assert_eq!(split_all(&[b"a\n"]), vec![text(1, "a")]);
        assert_eq!(split_all(&[b""]), vec![]);
        assert_eq!(split_all(&[b"\n\n"]), vec![]);
    }

    #[test]
    fn an_overlong_line_is_rejected_without_being_buffered() {
        let long = vec![b'x'; MAX_LINE_BYTES + 1];
        let exact = vec![b'y'; MAX_LINE_BYTES];
        let mut splitter = LineSplitter::new();
        let mut out = Vec::new();
        for piece in long.chunks(1000) {
            out.extend(splitter.push(piece));
            assert!(splitter.current.len() <= MAX_LINE_BYTES + 1);
        }
        out.extend(splitter.push(b"\n"));
        out.extend(splitter.push(&exact));
        out.extend(splitter.push(b"\r\nok"));
        out.extend(splitter.finish());
        assert_eq!(out[0], rejected(1, TOO_LONG));
        assert_eq!(out[1], text(2, &"y".repeat(MAX_LINE_BYTES)));
        assert_eq!(out[2], text(3, "ok"));
    }

    #[test]
    fn invalid_utf8_and_nul_bytes_are_rejected_lines() {
        assert_eq!(split_all(&[b"\xff\xfe\n"]), vec![rejected(1, NOT_UTF8)]);
        assert_eq!(split_all(&[b"{\0}\n"]), vec![rejected(1, HAS_NUL)]);
    }

    fn stream_of(
        chunks: Vec<&'static [u8]>,
    ) -> impl Stream<Item = Result<&'static [u8], String>> + Unpin {
        futures::stream::iter(chunks.into_iter().map(Ok))
    }

    #[tokio::test]
    async fn a_spool_reads_back_what_was_received_in_batches() {
        let mut spool = Spool::receive(stream_of(vec![b"a\n\nb\n", b"\xffc\nd"]))
            .await
            .unwrap();
        assert_eq!(spool.total(), 4);
        let first = spool.next_batch(3, usize::MAX).await.unwrap();
        assert_eq!(
            first,
            vec![text(1, "a"), text(3, "b"), rejected(4, NOT_UTF8)]
        );
        assert_eq!(
            spool.next_batch(3, usize::MAX).await.unwrap(),
            vec![text(5, "d")]
        );
        assert!(spool.next_batch(3, usize::MAX).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_batch_stops_early_past_its_byte_budget() {
        let mut spool = Spool::receive(stream_of(vec![b"aaaa\nbbbb\ncccc\n"]))
            .await
            .unwrap();
        assert_eq!(spool.next_batch(10, 5).await.unwrap().len(), 2);
        assert_eq!(spool.next_batch(10, 5).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_upload_past_the_limit_is_refused() {
        let result = Spool::receive_limited(stream_of(vec![b"abc\n", b"def\n"]), 6).await;
        assert!(matches!(result, Err(UploadError::TooLarge)));
    }

    #[tokio::test]
    async fn a_failing_body_stream_is_reported() {
        let body = futures::stream::iter(vec![Ok(b"a\n".as_slice()), Err("reset".to_owned())]);
        let result = Spool::receive(body).await;
        assert!(matches!(result, Err(UploadError::Body(reason)) if reason == "reset"));
    }
}
