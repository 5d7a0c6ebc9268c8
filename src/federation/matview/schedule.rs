//! Materialized views refreshed on their `thermocline.refresh_interval`.

/// Refreshes the views of `database` whose `thermocline.refresh_interval`
/// has passed since their last refresh (found on `service`, a service
/// connection to that database), through the server listening at `addr`,
/// each as its owner. Returns how many were refreshed. With
/// several servers in front of one database, each view is refreshed by
/// one of them at a time (a transaction-level advisory lock on the view).
pub(crate) async fn refresh_due(
    target: &crate::backend::target::BackendTarget,
    service: &tokio_postgres::Client,
    database: &str,
    addr: std::net::SocketAddr,
) -> Result<usize, String> {
    const DUE: &str = "SELECT pg_catalog.format('%I.%I', d.view_schema, d.view_name), \
                pg_catalog.pg_get_userbyid(c.relowner) \
         FROM thermocline.materialized_views d \
         JOIN pg_catalog.pg_namespace n ON n.nspname = d.view_schema \
         JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = d.view_name \
         WHERE d.refresh_interval IS NOT NULL \
           AND (d.last_refresh IS NULL OR d.last_refresh + d.refresh_interval <= now())";
    let due = match service
        .query(
            "SELECT pg_catalog.to_regclass('thermocline.materialized_views') IS NOT NULL",
            &[],
        )
        .await
    {
        Ok(r) if r.first().is_some_and(|r| r.get::<_, bool>(0)) => {
            service.query(DUE, &[]).await.map_err(|e| e.to_string())?
        }
        Ok(_) => return Ok(0),
        Err(e) => return Err(e.to_string()),
    };
    let mut refreshed = 0;
    for row in due {
        let (view, owner): (String, String) = (row.get(0), row.get(1));
        let (client, conn) =
            crate::tiering::service_config(target, database, "thermocline refresh")
                .host(addr.ip().to_string())
                .port(addr.port())
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(conn);
        let result = async {
            client
                .batch_execute(&format!(
                    "SET ROLE {}; BEGIN",
                    crate::catalog::quote_ident(&owner)
                ))
                .await?;
            let go = client
                .query_one(
                    &format!(
                        "SELECT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.to_regclass($1)::oid::bigint) \
                            AND EXISTS ({DUE} AND pg_catalog.format('%I.%I', d.view_schema, d.view_name) = $1)"
                    ),
                    &[&view],
                )
                .await?
                .get::<_, bool>(0);
            if go {
                client
                    .batch_execute(&format!("REFRESH MATERIALIZED VIEW {view}"))
                    .await?;
            }
            client.batch_execute("COMMIT").await?;
            Ok::<bool, tokio_postgres::Error>(go)
        }
        .await;
        drop(client);
        let _ = conn.await;
        match result {
            Ok(true) => {
                refreshed += 1;
                tracing::info!(view = %view, database, "refreshed a materialized view");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(view = %view, database, error = %e, "refreshing a materialized view failed")
            }
        }
    }
    Ok(refreshed)
}
