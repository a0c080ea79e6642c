//! Checkpoints in object storage over the S3 API (`--checkpoint-dir
//! s3://BUCKET/PREFIX`), with the same layout and files as on local disk:
//! `PREFIX/JOB_ID/chk-N/state-S.bin`, `.../chk-N/manifest.json` and
//! `PREFIX/JOB_ID/job.json`. A checkpoint's files are uploaded first and
//! its manifest last, with a create-only conditional put (`If-None-Match:
//! *`), so a checkpoint exists only once it is whole and no two writers can
//! both complete the same one. There are no directories and no renames:
//! objects without a manifest beside them are leftovers of a checkpoint
//! that did not complete, removed on restore.
//!
//! The endpoint, region and credentials come from the usual AWS variables
//! (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//! `AWS_ALLOW_HTTP`, `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`). Requests time out
//! and retry within bounds ([`REQUEST_TIMEOUT`], [`MAX_RETRIES`],
//! [`RETRY_BUDGET`]), so an endpoint that fails fails a checkpoint in
//! seconds, and errors are worded for the user: a missing bucket, wrong
//! credentials, an endpoint that cannot be reached.
//!
//! object_store is async; each client runs its requests on a small tokio
//! runtime of its own, and this module's methods block on them (they run
//! on the checkpoint writer's thread, or before the job starts).

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientConfigKey, ObjectStore, ObjectStoreExt, PutMode, PutPayload, RetryConfig,
};

use crate::checkpoint::storage::{CheckpointStorage, StorageError};

/// How long one request may take, its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Retries of a failed request (object_store's default is 10).
pub const MAX_RETRIES: usize = 2;
/// No retry starts after this much time from the first try (object_store's
/// default is 180 s).
pub const RETRY_BUDGET: Duration = Duration::from_secs(10);
/// Files larger than this are uploaded in parts.
const MULTIPART_OVER: usize = 64 << 20;
/// The size of each part.
const PART: usize = 16 << 20;
/// Files uploaded at once.
const CONCURRENT_UPLOADS: usize = 8;

/// A client for one bucket: the store and the runtime its requests run on.
struct Client {
    s3: AmazonS3,
    runtime: tokio::runtime::Runtime,
    bucket: String,
    /// The endpoint, for messages.
    endpoint: String,
}

/// Checkpoints under one prefix of a bucket (a job's, or a checkpoint
/// directory of many jobs).
pub struct S3Storage {
    client: Arc<Client>,
    /// The prefix, without leading or trailing `/` (may be empty).
    prefix: String,
}

/// Whether credentials are given in a way that does not ask an instance
/// metadata service (which is not on this machine's loopback).
fn credentials_given() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY"))
        || set("AWS_WEB_IDENTITY_TOKEN_FILE")
        || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        || std::env::var("AWS_SKIP_SIGNATURE").is_ok_and(|v| v == "true")
}

impl Client {
    fn new(bucket: &str) -> Result<Self, StorageError> {
        let fail = |message: String| StorageError {
            what: "open",
            location: format!("s3://{bucket}"),
            message,
            not_found: false,
        };
        if !credentials_given() {
            return Err(fail(
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a server other than AWS)".into(),
            ));
        }
        // rustls needs a crypto provider; ring's, once per process (a second
        // install is refused, harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: MAX_RETRIES,
                retry_timeout: RETRY_BUDGET,
            })
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                format!("{}s", REQUEST_TIMEOUT.as_secs()),
            )
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                format!("{}s", CONNECT_TIMEOUT.as_secs()),
            );
        let endpoint = builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .unwrap_or_else(|| "AWS".into());
        let s3 = builder
            .build()
            .map_err(|e| fail(format!("the S3 settings do not work: {}", innermost(&e))))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sluice-s3")
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start the S3 client's runtime: {e}")))?;
        Ok(Client {
            s3,
            runtime,
            bucket: bucket.to_string(),
            endpoint,
        })
    }

    /// A storage error for `what` on `key`, worded for the user.
    fn error(&self, what: &'static str, key: &str, e: &object_store::Error) -> StorageError {
        let location = format!("s3://{}/{key}", self.bucket);
        let full = e.to_string();
        let not_found = matches!(e, object_store::Error::NotFound { .. });
        let message = if full.contains("NoSuchBucket") {
            format!(
                "bucket `{}` does not exist at {}; create it, or fix --checkpoint-dir",
                self.bucket, self.endpoint
            )
        } else if matches!(
            e,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || full.contains("403 Forbidden")
        {
            let code = [
                "SignatureDoesNotMatch",
                "InvalidAccessKeyId",
                "AccessDenied",
            ]
            .into_iter()
            .find(|c| full.contains(c))
            .unwrap_or("403 Forbidden");
            format!(
                "access denied ({code}): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY and the bucket's permissions"
            )
        } else if not_found {
            "no such object".to_string()
        } else if full.contains("URL scheme is not allowed") {
            format!(
                "the endpoint {} is plain http; set AWS_ALLOW_HTTP=true to allow it",
                self.endpoint
            )
        } else if full.contains("error sending request") || full.contains("operation timed out") {
            format!(
                "cannot reach the S3 endpoint {}: {} (after {MAX_RETRIES} retries)",
                self.endpoint,
                innermost(e)
            )
        } else {
            full
        };
        StorageError {
            what,
            location,
            message,
            not_found,
        }
    }
}

/// The innermost cause of an error: for a network failure, the part that
/// says what happened ("Connection refused").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl S3Storage {
    /// The storage at `s3://bucket/prefix`; nothing is asked of the server.
    pub fn open(bucket: &str, prefix: &str) -> Result<Self, StorageError> {
        Ok(S3Storage {
            client: Arc::new(Client::new(bucket)?),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    /// The storage at `name` under this one, on the same client.
    pub fn child(&self, name: &str) -> S3Storage {
        S3Storage {
            client: self.client.clone(),
            prefix: self.key(name),
        }
    }

    /// Checks that the bucket is there and the credentials work: lists the
    /// prefix (a 404 on a list can only be the bucket; a 403, the keys).
    pub fn probe(&self) -> Result<(), StorageError> {
        let prefix = self.path("");
        let c = &self.client;
        c.runtime
            .block_on(c.s3.list_with_delimiter(Some(&prefix)))
            .map(drop)
            .map_err(|e| c.error("list", &self.prefix, &e))
    }

    fn key(&self, name: &str) -> String {
        match (self.prefix.is_empty(), name.is_empty()) {
            (true, _) => name.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{name}", self.prefix),
        }
    }

    fn path(&self, name: &str) -> Path {
        Path::from(self.key(name))
    }

    fn put(&self, name: &str, bytes: Vec<u8>, mode: PutMode) -> Result<(), StorageError> {
        let c = &self.client;
        let path = self.path(name);
        c.runtime
            .block_on(put(&c.s3, &path, bytes, mode))
            .map_err(|e| match e {
                object_store::Error::AlreadyExists { .. } => StorageError {
                    what: "write",
                    location: self.shown(name),
                    message: "it already exists: another job wrote the same checkpoint; give each job its own --checkpoint-dir".into(),
                    not_found: false,
                },
                e => c.error("write", &self.key(name), &e),
            })
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, StorageError> {
        let c = &self.client;
        let path = self.path(name);
        c.runtime
            .block_on(async {
                let got = c.s3.get(&path).await?;
                got.bytes().await
            })
            .map(|b| b.to_vec())
            .map_err(|e| c.error("read", &self.key(name), &e))
    }

    fn head_ms(&self, name: &str) -> Option<u64> {
        let c = &self.client;
        let meta = c.runtime.block_on(c.s3.head(&self.path(name))).ok()?;
        u64::try_from(meta.last_modified.timestamp_millis()).ok()
    }

    /// Every object key under `name/`, relative to this prefix.
    fn keys_under(&self, name: &str) -> Result<Vec<String>, StorageError> {
        let c = &self.client;
        let prefix = self.path(name);
        let base = format!("{}/", self.prefix);
        c.runtime
            .block_on(c.s3.list(Some(&prefix)).try_collect::<Vec<_>>())
            .map(|all| {
                all.into_iter()
                    .map(|m| {
                        let key = m.location.to_string();
                        match self.prefix.is_empty() {
                            true => key,
                            false => key.strip_prefix(&base).unwrap_or(&key).to_string(),
                        }
                    })
                    .collect()
            })
            .map_err(|e| c.error("list", &self.key(name), &e))
    }

    /// Deletes every object under `name/`.
    fn delete_under(&self, name: &str) -> Result<(), StorageError> {
        let c = &self.client;
        let prefix = self.path(name);
        c.runtime
            .block_on(async {
                let locations = c.s3.list(Some(&prefix)).map_ok(|m| m.location).boxed();
                c.s3.delete_stream(locations).try_collect::<Vec<_>>().await
            })
            .map(drop)
            .map_err(|e| c.error("remove", &self.key(name), &e))
    }

    fn shown(&self, name: &str) -> String {
        format!("s3://{}/{}", self.client.bucket, self.key(name))
    }

    /// Names of the "directories" right under this prefix.
    pub fn children(&self) -> Result<Vec<String>, StorageError> {
        let c = &self.client;
        let prefix = self.path("");
        let listed = c
            .runtime
            .block_on(c.s3.list_with_delimiter(Some(&prefix)))
            .map_err(|e| c.error("list", &self.prefix, &e))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }
}

/// Uploads one object: in one request, or in parts when it is large (a
/// create-only upload is always one request).
async fn put(
    s3: &AmazonS3,
    path: &Path,
    bytes: Vec<u8>,
    mode: PutMode,
) -> object_store::Result<()> {
    if bytes.len() <= MULTIPART_OVER || !matches!(mode, PutMode::Overwrite) {
        return s3
            .put_opts(path, PutPayload::from(bytes), mode.into())
            .await
            .map(drop);
    }
    let mut upload = s3.put_multipart(path).await?;
    for part in bytes.chunks(PART) {
        if let Err(e) = upload.put_part(PutPayload::from(part.to_vec())).await {
            let _ = upload.abort().await;
            return Err(e);
        }
    }
    match upload.complete().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = upload.abort().await;
            Err(e)
        }
    }
}

impl CheckpointStorage for S3Storage {
    fn location(&self) -> String {
        self.shown("")
    }

    fn ids(&self) -> Result<Vec<u64>, StorageError> {
        let mut ids: Vec<u64> = self
            .keys_under("")?
            .iter()
            .filter_map(|k| k.strip_suffix("/manifest.json"))
            .filter_map(|d| d.strip_prefix("chk-"))
            .filter_map(|n| n.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn write(
        &self,
        id: u64,
        files: &[(String, Vec<u8>)],
        manifest: &[u8],
    ) -> Result<(), StorageError> {
        let c = &self.client;
        let dir = format!("chk-{id}");
        let uploads = futures::stream::iter(files.iter().map(|(name, bytes)| {
            let key = format!("{dir}/{name}");
            async move {
                put(&c.s3, &self.path(&key), bytes.clone(), PutMode::Overwrite)
                    .await
                    .map_err(|e| c.error("write", &self.key(&key), &e))
            }
        }))
        .buffer_unordered(CONCURRENT_UPLOADS)
        .try_collect::<Vec<()>>();
        c.runtime.block_on(uploads)?;
        // Last, and only once: the checkpoint is complete when this exists.
        self.put(
            &format!("{dir}/manifest.json"),
            manifest.to_vec(),
            PutMode::Create,
        )
    }

    fn read(&self, id: u64, name: &str) -> Result<Vec<u8>, StorageError> {
        self.get(&format!("chk-{id}/{name}"))
    }

    fn modified(&self, id: u64) -> Option<u64> {
        self.head_ms(&format!("chk-{id}/manifest.json"))
    }

    fn remove(&self, id: u64) -> Result<(), StorageError> {
        let dir = format!("chk-{id}");
        // The manifest first: from then on it is not a checkpoint.
        let c = &self.client;
        let manifest = self.path(&format!("{dir}/manifest.json"));
        c.runtime
            .block_on(c.s3.delete(&manifest))
            .map_err(|e| c.error("remove", &self.key(&dir), &e))?;
        self.delete_under(&dir)
    }

    fn clean_in_progress(&self) {
        let Ok(keys) = self.keys_under("") else {
            return;
        };
        let complete: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.strip_suffix("/manifest.json"))
            .collect();
        let mut partial: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.split_once('/').map(|(d, _)| d))
            .filter(|d| d.starts_with("chk-") && !complete.contains(d))
            .collect();
        partial.dedup();
        for dir in partial {
            let _ = self.delete_under(dir);
        }
    }

    fn put_job(&self, bytes: &[u8]) -> Result<(), StorageError> {
        self.put("job.json", bytes.to_vec(), PutMode::Overwrite)
    }

    fn get_job(&self) -> Result<Option<Vec<u8>>, StorageError> {
        match self.get("job.json") {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.not_found => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn job_modified(&self) -> Option<u64> {
        self.head_ms("job.json")
    }

    fn remove_job(&self) {
        let c = &self.client;
        let _ = c.runtime.block_on(c.s3.delete(&self.path("job.json")));
    }

    fn children(&self) -> Result<Vec<String>, StorageError> {
        S3Storage::children(self)
    }

    fn child(&self, name: &str) -> Result<Box<dyn CheckpointStorage>, StorageError> {
        Ok(Box::new(S3Storage::child(self, name)))
    }
}
