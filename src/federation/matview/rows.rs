//! A view's rows: computed federated, then written into its table by
//! binary COPY.

use std::sync::Arc;

use super::internal;
use crate::federation::link::{self, LinkError, PgLink};
use crate::federation::scan::ScanContext;
use crate::federation::{
    Failure, Federation, Out, Run, SessionSettings, cancelled, close_cursors, execute, take_back,
};
use crate::frontend::cancel::SessionCancel;

/// Runs `sql` federated and returns its columns and its rows as DataRow
/// messages of binary cells.
pub(in crate::federation) async fn rows_of(
    mut link: PgLink,
    sql: &str,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
    own_snapshot: bool,
) -> (
    Option<PgLink>,
    Result<(Vec<link::FieldDescription>, KeptRows), Failure>,
) {
    let mut msgs = Vec::new();
    link::frontend::parse(&mut msgs, "", sql);
    link::frontend::describe(&mut msgs, b'S', "");
    crate::protocol::put_message(&mut msgs, b'S', b"");
    if link.send(&msgs).await.is_err() {
        return (None, Err(Failure::Link(LinkError::Gone)));
    }
    let described = on_link!(link, link.until_ready().await);
    let Some(fields) = described
        .iter()
        .find(|m| m.tag == b'T')
        .and_then(|m| link::row_description(&m.body))
    else {
        return (
            Some(link),
            Err(internal("the view's query returns no rows")),
        );
    };
    let tz = match settings.zone() {
        Ok(tz) => tz,
        Err(e) => return (Some(link), Err(Failure::Ours(e))),
    };
    let fixed_snapshot = link.txn_status == b'T' && own_snapshot;
    let (shared, ctx) = ScanContext::start(link, tz, false, fixed_snapshot);
    let text = settings.text(tz);
    let run = Run::kept(sql, &fields, &settings.user);
    let sink = Collect::default();
    let mut w: crate::stream::WriteHalf = Box::new(sink.clone());
    let mut o = Out::new(&mut w);
    let seen = cancel.count();
    let outcome = tokio::select! {
        r = execute(&run, &ctx, federation, &text, &mut o) => r,
        () = cancel.after(seen) => Err(cancelled()),
    };
    o.flush().await;
    drop(ctx);
    let Some(mut link) = take_back(shared).await else {
        return (None, Err(Failure::Link(LinkError::Gone)));
    };
    if link.recover().await.is_err() || close_cursors(&mut link).await.is_none() {
        return (None, Err(Failure::Link(LinkError::Gone)));
    }
    if let Err(e) = outcome {
        return (Some(link), Err(e));
    }
    (Some(link), Ok((fields, sink.take())))
}

/// Writes DataRow messages (binary cells) into `table` by COPY; returns
/// the rows written.
pub(in crate::federation) async fn copy_in(
    link: &mut PgLink,
    table: &str,
    rows: KeptRows,
) -> Result<u64, LinkError> {
    let mut q = Vec::new();
    link::frontend::query(&mut q, &format!("COPY {table} FROM STDIN (FORMAT binary)"));
    link.send(&q).await?;
    loop {
        let m = link.recv().await?;
        match m.tag {
            b'G' => break,
            b'E' => {
                link.until_ready().await?;
                return Err(LinkError::Postgres(m));
            }
            b'N' => {}
            _ => link.deferred.push(m),
        }
    }
    let rows = send_copy_data(link, rows).await?;
    link.until_ready().await?;
    Ok(rows)
}

/// [`copy_in`] within a client's extended-protocol exchange, where no Sync
/// may be sent, under thermocline's own statement and portal `name`.
pub(in crate::federation) async fn copy_in_extended(
    link: &mut PgLink,
    name: &str,
    table: &str,
    rows: KeptRows,
) -> Result<u64, LinkError> {
    use link::frontend;
    let mut msgs = Vec::new();
    frontend::parse(
        &mut msgs,
        name,
        &format!("COPY {table} FROM STDIN (FORMAT binary)"),
    );
    frontend::bind_binary(&mut msgs, name, name);
    link.extended(&msgs, 2).await?;
    // The COPY begins; then its data and its completion.
    let mut msgs = Vec::new();
    frontend::execute(&mut msgs, name, 0);
    link.send(&msgs).await?;
    until_tag(link, b'G').await?;
    let rows = send_copy_data(link, rows).await?;
    until_tag(link, b'C').await?;
    let mut msgs = Vec::new();
    frontend::close_both(&mut msgs, name);
    link.extended(&msgs, 2).await?;
    Ok(rows)
}

/// Reads replies until one tagged `tag`; an ErrorResponse leaves Postgres
/// skipping to the client's Sync.
async fn until_tag(link: &mut PgLink, tag: u8) -> Result<(), LinkError> {
    let mut flush = Vec::new();
    crate::protocol::put_message(&mut flush, b'H', b"");
    link.send(&flush).await?;
    loop {
        let m = link.recv().await?;
        if m.tag == tag {
            return Ok(());
        }
        if m.tag == b'E' {
            link.skip_to_sync();
            return Err(LinkError::Postgres(m));
        }
    }
}

/// Sends DataRow messages (binary cells) as the data of a binary COPY
/// FROM STDIN that Postgres has begun, and CopyDone; returns the rows.
async fn send_copy_data(link: &mut PgLink, rows: KeptRows) -> Result<u64, LinkError> {
    const CHUNK: usize = 1 << 20;
    // COPY's binary format: a header, then each row as a DataRow's body.
    let mut data = Vec::with_capacity(CHUNK + (64 << 10));
    data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    data.extend_from_slice(&0i32.to_be_bytes());
    data.extend_from_slice(&0i32.to_be_bytes());
    let mut out = Vec::with_capacity(CHUNK + (64 << 10));
    let mut reader = rows.reader().await.map_err(unreadable)?;
    let mut n = 0u64;
    while let Some(row) = reader.next().await.map_err(unreadable)? {
        data.extend_from_slice(row);
        n += 1;
        if data.len() >= CHUNK {
            crate::protocol::put_message(&mut out, b'd', &data);
            data.clear();
            link.send(&out).await?;
            out.clear();
        }
    }
    data.extend_from_slice(&(-1i16).to_be_bytes());
    crate::protocol::put_message(&mut out, b'd', &data);
    crate::protocol::put_message(&mut out, b'c', b"");
    link.send(&out).await?;
    Ok(n)
}

/// Each column of `rows` (DataRows of binary cells) as one binary array of
/// its values, whose elements are of type `elements` (by column), and the
/// rows read. `None` when the arrays would hold more than `limit` bytes.
pub(in crate::federation) async fn column_arrays(
    rows: KeptRows,
    elements: &[u32],
    limit: usize,
) -> Result<Option<(Vec<Vec<u8>>, i32)>, LinkError> {
    let mut values: Vec<Vec<u8>> = vec![Vec::new(); elements.len()];
    let mut nulls = vec![false; elements.len()];
    let (mut n, mut size) = (0i32, 0usize);
    let mut reader = rows.reader().await.map_err(unreadable)?;
    while let Some(row) = reader.next().await.map_err(unreadable)? {
        size += row.len();
        if size > limit || n == i32::MAX {
            return Ok(None);
        }
        // The row's cells, each its length and bytes: an array element's
        // form.
        let mut at = 2;
        for (column, null) in values.iter_mut().zip(&mut nulls) {
            let len = row
                .get(at..at + 4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| unreadable(truncated()))?;
            let end = at + 4 + len.max(0) as usize;
            column.extend_from_slice(row.get(at..end).ok_or_else(|| unreadable(truncated()))?);
            *null |= len < 0;
            at = end;
        }
        n += 1;
    }
    let arrays = values
        .into_iter()
        .zip(nulls)
        .zip(elements)
        .map(|((cells, null), element)| {
            let mut a = Vec::with_capacity(cells.len() + 20);
            a.extend_from_slice(&i32::from(n > 0).to_be_bytes());
            a.extend_from_slice(&i32::from(null).to_be_bytes());
            a.extend_from_slice(&element.to_be_bytes());
            if n > 0 {
                a.extend_from_slice(&n.to_be_bytes());
                a.extend_from_slice(&1i32.to_be_bytes());
            }
            a.extend_from_slice(&cells);
            a
        })
        .collect();
    Ok(Some((arrays, n)))
}

/// A failure to keep or read back a statement's rows, as Postgres would
/// report a failing temporary file.
fn unreadable(e: std::io::Error) -> LinkError {
    let message = crate::protocol::ErrorFields::error(
        "58030",
        &format!("could not keep the statement's rows in a temporary file: {e}"),
    )
    .encode();
    LinkError::Postgres(link::BackendMessage {
        tag: b'E',
        body: bytes::Bytes::copy_from_slice(&message[5..]),
    })
}

/// A statement's rows (DataRow messages), in memory up to this many bytes
/// and past it in a temporary file: a statement that keeps millions of
/// rows holds no more than this of them.
const IN_MEMORY: usize = 16 << 20;

/// A statement's DataRow messages, as they are written.
#[derive(Default)]
pub(in crate::federation) struct KeptRows {
    memory: Vec<u8>,
    file: Option<std::io::BufWriter<std::fs::File>>,
    /// The first failure to write the file: reading back then fails.
    failed: Option<std::io::Error>,
}

impl KeptRows {
    fn write(&mut self, buf: &[u8]) {
        use std::io::Write;
        if self.failed.is_some() {
            return;
        }
        if self.file.is_none() && self.memory.len() + buf.len() > IN_MEMORY {
            let spilled = tempfile::tempfile().and_then(|f| {
                let mut f = std::io::BufWriter::with_capacity(1 << 20, f);
                f.write_all(&self.memory)?;
                Ok(f)
            });
            match spilled {
                Ok(f) => {
                    self.memory = Vec::new();
                    self.file = Some(f);
                }
                Err(e) => {
                    self.failed = Some(e);
                    return;
                }
            }
        }
        match &mut self.file {
            Some(f) => {
                if let Err(e) = f.write_all(buf) {
                    self.failed = Some(e);
                }
            }
            None => self.memory.extend_from_slice(buf),
        }
    }

    /// Reads the rows back from the start.
    async fn reader(self) -> std::io::Result<RowReader> {
        use std::io::Seek;
        if let Some(e) = self.failed {
            return Err(e);
        }
        match self.file {
            None => Ok(RowReader::Memory {
                bytes: self.memory,
                at: 0,
            }),
            Some(f) => {
                let mut f = f.into_inner().map_err(|e| e.into_error())?;
                f.rewind()?;
                Ok(RowReader::File {
                    file: tokio::io::BufReader::with_capacity(
                        1 << 20,
                        tokio::fs::File::from_std(f),
                    ),
                    row: Vec::new(),
                })
            }
        }
    }
}

/// Kept DataRows read back, one row's body at a time.
enum RowReader {
    Memory {
        bytes: Vec<u8>,
        at: usize,
    },
    File {
        file: tokio::io::BufReader<tokio::fs::File>,
        row: Vec<u8>,
    },
}

impl RowReader {
    /// The next DataRow's body (its cells, as binary COPY writes a row).
    async fn next(&mut self) -> std::io::Result<Option<&[u8]>> {
        use tokio::io::AsyncReadExt;
        match self {
            RowReader::Memory { bytes, at } => {
                let Some(head) = bytes.get(*at..*at + 5) else {
                    return Ok(None);
                };
                let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
                let row = bytes.get(*at + 5..*at + 1 + len).ok_or_else(truncated)?;
                *at += 1 + len;
                Ok(Some(row))
            }
            RowReader::File { file, row } => {
                let mut head = [0u8; 5];
                match file.read_exact(&mut head).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(e),
                }
                let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
                row.resize(len.checked_sub(4).ok_or_else(truncated)?, 0);
                file.read_exact(row).await?;
                Ok(Some(row))
            }
        }
    }
}

fn truncated() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "a kept row is cut short")
}

/// A writer for a statement's DataRows (see [`KeptRows`]).
#[derive(Clone, Default)]
pub(in crate::federation) struct Collect(Arc<std::sync::Mutex<KeptRows>>);

impl Collect {
    /// The rows written so far.
    pub fn take(&self) -> KeptRows {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl tokio::io::AsyncWrite for Collect {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows past the bound go to a file and come back whole, in order.
    #[tokio::test]
    async fn kept_rows_spill_to_a_file_and_read_back() {
        let row = |i: u32| {
            let cell = format!("row {i} {}", "x".repeat((i % 97) as usize));
            let mut body = 1i16.to_be_bytes().to_vec();
            body.extend_from_slice(&(cell.len() as i32).to_be_bytes());
            body.extend_from_slice(cell.as_bytes());
            body
        };
        for n in [3u32, 400_000] {
            let sink = Collect::default();
            let mut w = sink.clone();
            for i in 0..n {
                let mut m = Vec::new();
                crate::protocol::put_message(&mut m, b'D', &row(i));
                tokio::io::AsyncWriteExt::write_all(&mut w, &m)
                    .await
                    .unwrap();
            }
            let kept = sink.take();
            assert_eq!(kept.file.is_some(), n > 3, "{n} rows");
            let mut reader = kept.reader().await.unwrap();
            let mut read = 0;
            while let Some(r) = reader.next().await.unwrap() {
                assert_eq!(r, row(read).as_slice());
                read += 1;
            }
            assert_eq!(read, n);
        }
    }

    /// Columns become binary arrays, NULLs flagged; past the limit, none.
    #[tokio::test]
    async fn kept_rows_become_one_array_per_column() {
        let sink = Collect::default();
        let mut w = sink.clone();
        // (int4 7, text "ab"), (int4 NULL, text "")
        let rows: [&[u8]; 2] = [
            b"\0\x02\0\0\0\x04\0\0\0\x07\0\0\0\x02ab",
            b"\0\x02\xff\xff\xff\xff\0\0\0\0",
        ];
        for body in rows {
            let mut m = Vec::new();
            crate::protocol::put_message(&mut m, b'D', body);
            tokio::io::AsyncWriteExt::write_all(&mut w, &m)
                .await
                .unwrap();
        }
        let (arrays, n) = column_arrays(sink.take(), &[23, 25], 1 << 20)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 2);
        let head = |null: u8, oid: u8| {
            let mut h = vec![0, 0, 0, 1, 0, 0, 0, null, 0, 0, 0, oid];
            h.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 1]);
            h
        };
        let mut ints = head(1, 23);
        ints.extend_from_slice(b"\0\0\0\x04\0\0\0\x07\xff\xff\xff\xff");
        let mut texts = head(0, 25);
        texts.extend_from_slice(b"\0\0\0\x02ab\0\0\0\0");
        assert_eq!(arrays, [ints, texts]);
        // No rows: empty arrays.
        let (arrays, n) = column_arrays(KeptRows::default(), &[23], 1 << 20)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (arrays, n),
            (vec![vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 23]], 0)
        );
        let sink = Collect::default();
        let mut w = sink.clone();
        let mut m = Vec::new();
        crate::protocol::put_message(&mut m, b'D', rows[0]);
        tokio::io::AsyncWriteExt::write_all(&mut w, &m)
            .await
            .unwrap();
        assert!(
            column_arrays(sink.take(), &[23, 25], 8)
                .await
                .unwrap()
                .is_none()
        );
    }
}
