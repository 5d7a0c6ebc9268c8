//! Commits of whole table updates to a REST catalog, made the way the
//! Iceberg REST protocol defines them (`POST …/namespaces/{ns}/tables/{t}`
//! with requirements and updates). The Iceberg crate's own REST client
//! makes every other request; its commits are only those of its
//! transactions, which cannot replace files or give a schema whole.

use iceberg::{Error, ErrorKind, TableIdent, TableRequirement, TableUpdate};
use tokio::sync::OnceCell;

/// A REST catalog: its address and the bearer token sent to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestConfig {
    /// `http://host:port[/path]`, without `/v1`.
    pub uri: String,
    pub token: Option<String>,
}

pub(super) struct Commits {
    http: reqwest::Client,
    config: RestConfig,
    warehouse: String,
    /// The address and path prefix the catalog's `/v1/config` gives
    /// (its overrides win over what was configured), asked once.
    endpoint: OnceCell<(String, String)>,
}

impl Commits {
    pub(super) fn new(config: &RestConfig, warehouse: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            config: config.clone(),
            warehouse: warehouse.to_string(),
            endpoint: OnceCell::new(),
        }
    }

    fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.config.token {
            Some(token) => r.bearer_auth(token),
            None => r,
        }
    }

    async fn endpoint(&self) -> Result<&(String, String), Error> {
        self.endpoint
            .get_or_try_init(|| async {
                let mut url = url(&self.config.uri, &["v1", "config"])?;
                if !self.warehouse.is_empty() {
                    url.query_pairs_mut()
                        .append_pair("warehouse", &self.warehouse);
                }
                let response = self
                    .request(reqwest::Method::GET, url)
                    .send()
                    .await
                    .map_err(not_reached)?;
                let body = answer(response).await?;
                let setting = |name: &str| {
                    ["overrides", "defaults"]
                        .iter()
                        .find_map(|part| body.get(part)?.get(name)?.as_str().map(str::to_string))
                };
                let uri = setting("uri")
                    .map(|u| u.trim_end_matches('/').to_string())
                    .unwrap_or_else(|| self.config.uri.clone());
                Ok((uri, setting("prefix").unwrap_or_default()))
            })
            .await
    }

    /// Commits `updates` to `ident` if the catalog's table meets
    /// `requirements`; a table changed meanwhile fails with
    /// `CatalogCommitConflicts`.
    pub(super) async fn commit(
        &self,
        ident: &TableIdent,
        requirements: &[TableRequirement],
        updates: &[TableUpdate],
    ) -> Result<(), Error> {
        let (uri, prefix) = self.endpoint().await?;
        let namespace = ident.namespace().clone().inner();
        let namespace_segment = namespace.join("\u{1f}");
        let mut path = vec!["v1"];
        path.extend(prefix.split('/').filter(|p| !p.is_empty()));
        path.extend(["namespaces", &namespace_segment, "tables", ident.name()]);
        let body = serde_json::json!({
            "identifier": { "namespace": namespace, "name": ident.name() },
            "requirements": requirements,
            "updates": updates,
        });
        let body = serde_json::to_vec(&body)
            .map_err(|e| Error::new(ErrorKind::Unexpected, "encoding a commit").with_source(e))?;
        let response = self
            .request(reqwest::Method::POST, url(uri, &path)?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(not_reached)?;
        match response.status() {
            reqwest::StatusCode::CONFLICT => Err(Error::new(
                ErrorKind::CatalogCommitConflicts,
                format!("{ident} was changed by another commit; try again"),
            )),
            reqwest::StatusCode::NOT_FOUND => Err(Error::new(
                ErrorKind::TableNotFound,
                format!("the REST catalog has no table {ident}"),
            )),
            _ => answer(response).await.map(drop),
        }
    }
}

/// `base` with `segments` appended, each percent-encoded.
fn url(base: &str, segments: &[&str]) -> Result<reqwest::Url, Error> {
    let mut url = reqwest::Url::parse(base).map_err(|e| {
        Error::new(
            ErrorKind::DataInvalid,
            format!("the REST catalog's address {base:?} is not a URL"),
        )
        .with_source(e)
    })?;
    url.path_segments_mut()
        .map_err(|()| {
            Error::new(
                ErrorKind::DataInvalid,
                format!("the REST catalog's address {base:?} cannot take a path"),
            )
        })?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

fn not_reached(e: reqwest::Error) -> Error {
    Error::new(ErrorKind::Unexpected, "cannot reach the REST catalog").with_source(e)
}

/// The JSON body of a successful answer, or the catalog's own error
/// message.
async fn answer(response: reqwest::Response) -> Result<serde_json::Value, Error> {
    let status = response.status();
    let text = response.text().await.map_err(not_reached)?;
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    let message = body
        .pointer("/error/message")
        .and_then(|m| m.as_str())
        .map(str::to_string)
        .unwrap_or(text);
    Err(Error::new(
        ErrorKind::Unexpected,
        format!("the REST catalog answered {status}: {message}"),
    ))
}
