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
    Result<(Vec<link::FieldDescription>, Vec<u8>), Failure>,
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
    let run = Run {
        sql,
        fields: &fields,
        formats: vec![1; fields.len()],
        params: Vec::new(),
        row_description: false,
        limit: None,
        user: &settings.user,
        copy: None,
    };
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
    let data_rows = std::mem::take(&mut *sink.0.lock().unwrap_or_else(|e| e.into_inner()));
    (Some(link), Ok((fields, data_rows)))
}

/// Writes DataRow messages (binary cells) into `table` by COPY; returns
/// the rows written.
pub(in crate::federation) async fn copy_in(
    link: &mut PgLink,
    table: &str,
    data_rows: &[u8],
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
    let rows = send_copy_data(link, data_rows).await?;
    link.until_ready().await?;
    Ok(rows)
}

/// [`copy_in`] within a client's extended-protocol exchange, where no Sync
/// may be sent, under thermocline's own statement and portal `name`.
pub(in crate::federation) async fn copy_in_extended(
    link: &mut PgLink,
    name: &str,
    table: &str,
    data_rows: &[u8],
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
    let rows = send_copy_data(link, data_rows).await?;
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
async fn send_copy_data(link: &mut PgLink, data_rows: &[u8]) -> Result<u64, LinkError> {
    // COPY's binary format: a header, then each row as a DataRow's body.
    let mut data = Vec::with_capacity(data_rows.len() + 64);
    data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    data.extend_from_slice(&0i32.to_be_bytes());
    data.extend_from_slice(&0i32.to_be_bytes());
    let mut at = 0;
    let mut rows = 0u64;
    while at + 5 <= data_rows.len() {
        let len = u32::from_be_bytes([
            data_rows[at + 1],
            data_rows[at + 2],
            data_rows[at + 3],
            data_rows[at + 4],
        ]) as usize;
        data.extend_from_slice(&data_rows[at + 5..at + 1 + len]);
        at += 1 + len;
        rows += 1;
    }
    data.extend_from_slice(&(-1i16).to_be_bytes());
    let mut out = Vec::with_capacity(data.len() + 64);
    for chunk in data.chunks(1 << 20) {
        crate::protocol::put_message(&mut out, b'd', chunk);
        if out.len() >= 4 << 20 {
            link.send(&out).await?;
            out.clear();
        }
    }
    crate::protocol::put_message(&mut out, b'c', b"");
    link.send(&out).await?;
    Ok(rows)
}

/// An in-memory writer for a statement's DataRows.
#[derive(Clone, Default)]
pub(in crate::federation) struct Collect(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl tokio::io::AsyncWrite for Collect {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
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
