//! The tamper-evident log as the server runs it.
//!
//! * Group commit: decisions hand their audit events to one writer task,
//!   which appends everything waiting in one transaction and then answers
//!   each caller. A decision is answered only after its entry is durable
//!   (SQLite `synchronous=FULL`, PostgreSQL commit); if the append fails the
//!   decision fails (fail closed).
//! * The Merkle tree over every entry's leaf hash is kept in memory, caught
//!   up from the store (so entries written by other nodes are included), and
//!   signed into a checkpoint (Ed25519) whenever it grew, at most once a
//!   second and on demand. The signing key is generated at first start and
//!   kept in the store's settings (or in `audit_signing_key_file`).
//! * A new checkpoint must extend the last one signed: the tree is rebuilt
//!   from the leaf hashes the store holds, so before signing, its first N
//!   leaves must give the root of the latest stored checkpoint (of size N,
//!   validly signed). Otherwise the stored history was rewritten and the log
//!   refuses to sign over it: an error is logged, and verification on this
//!   node reports it until a checkpoint can be signed again.
//! * Checkpoints deleted from the store would leave nothing to compare
//!   with, so the node also keeps the largest checkpoint it has signed or
//!   checked (its witness) in memory and, with `audit_signing_key_file`, in
//!   a file beside the key (`<key file>.head`), read at start: a store
//!   whose checkpoints fall short of the witness is checked against the
//!   witness instead.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use chrono::Utc;
use steward_audit::{
    BundleManifest, Hash, LogSigner, LogVerifier, MerkleTree, SignedManifest, SignedTreeHead,
    TreeHead, VerifyReport, verify_tree_head,
};
use steward_core::{AuditEvent, ChangeContext, Error};
use steward_store::Store;
use steward_store::audit::{Pruning, canonical_entry};

use std::sync::Arc;

use steward_store::quotas::{Write, Written};

use crate::batch::{Batcher, Receipt};

/// The shared group-commit writer of the decision path.
pub type Writer = Arc<Batcher<Write, Written>>;

/// Largest batch one group commit writes.
const MAX_BATCH: usize = 2048;

/// The log: writer queue, tree and signer.
pub struct AuditLog {
    queue: Writer,
    tree: Mutex<MerkleTree>,
    signer: LogSigner,
    origin: String,
    /// Why the log last refused to sign a checkpoint, until one is signed.
    refusal: Mutex<Option<Refusal>>,
    /// The largest checkpoint (size, root) this node signed or checked.
    witness: Mutex<Option<(u64, Hash)>>,
    /// Where the witness outlives this process (beside the key file).
    witness_file: Option<std::path::PathBuf>,
}

/// A refusal to sign: the stored history does not extend the latest
/// checkpoint (`size`, `root`).
#[derive(Debug, Clone)]
struct Refusal {
    size: u64,
    root: Hash,
    /// The first entry the evidence cannot vouch for (none when the
    /// checkpoint itself is bad).
    position: Option<u64>,
    problem: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The store setting that holds the signing key when no file does.
const SEED_SETTING: &str = "audit_signing_seed";

/// The signing key from `path`. A missing file is created (readable by its
/// owner only) with the key the store held, which then leaves the store, or
/// with a new key; a store still holding a different key is refused, since
/// its checkpoints were signed with that one.
async fn key_from_file(store: &Store, path: &Path) -> Result<[u8; 32], Error> {
    let bad = |m: String| Error::new(steward_types::ErrorCode::InvalidRequest, m);
    let stored = store.setting(SEED_SETTING).await?;
    let seed = match std::fs::read_to_string(path) {
        Ok(text) => unhex(text.trim()).ok_or_else(|| {
            bad(format!(
                "audit_signing_key_file {} does not hold a key (64 hex digits)",
                path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let seed = match &stored {
                Some(text) => unhex(text)
                    .ok_or_else(|| Error::internal("the stored audit signing key is corrupt"))?,
                None => {
                    let why = format!("{} does not exist", path.display());
                    refuse_new_key_for_signed_log(store, &why).await?;
                    LogSigner::generate().seed_bytes()
                }
            };
            write_key(path, &hex(&seed)).map_err(|e| {
                bad(format!(
                    "cannot create audit_signing_key_file {}: {e}",
                    path.display()
                ))
            })?;
            tracing::info!(file = %path.display(), moved_from_store = stored.is_some(), "audit signing key written");
            seed
        }
        Err(e) => {
            return Err(bad(format!(
                "cannot read audit_signing_key_file {}: {e}",
                path.display()
            )));
        }
    };
    match stored {
        Some(text) if unhex(&text) != Some(seed) => Err(bad(format!(
            "the store holds a different audit signing key than {}; its checkpoints were signed \
             with that one (move it out by starting once with a key file that does not exist yet)",
            path.display()
        ))),
        Some(_) => {
            store.delete_setting(SEED_SETTING).await?;
            Ok(seed)
        }
        None => Ok(seed),
    }
}

/// A log already signed, whose key is not in the store, was signed with a
/// key kept in a file (by another node, or before a restart): a new key
/// would sign checkpoints nobody can verify with the published one.
async fn refuse_new_key_for_signed_log(store: &Store, why: &str) -> Result<(), Error> {
    if store.latest_checkpoint().await?.is_some() {
        return Err(Error::new(
            steward_types::ErrorCode::InvalidRequest,
            format!(
                "this log is signed with a key kept outside the store, and {why}: \
                 give this node the same audit_signing_key_file as the others"
            ),
        ));
    }
    Ok(())
}

fn write_key(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The witness file beside `key_file`.
fn witness_path(key_file: &Path) -> std::path::PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".head");
    name.into()
}

/// The witness a file holds (`SIZE ROOT_HEX`), none if there is no file.
fn read_witness(path: &Path) -> Result<Option<(u64, Hash)>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::internal(format!(
                "cannot read the audit log's witness {}: {e}",
                path.display()
            )));
        }
    };
    let mut parts = text.split_whitespace();
    let parsed = (|| {
        let size = parts.next()?.parse().ok()?;
        let root = Hash::from_hex(parts.next()?).ok()?;
        Some((size, root))
    })();
    parsed.map(Some).ok_or_else(|| {
        Error::internal(format!(
            "the audit log's witness {} is not `SIZE ROOT`: remove it only if \
             the log's checkpoints are known to be intact",
            path.display()
        ))
    })
}

/// Replace the witness file with `size`, `root` (written whole, then
/// renamed over the old one).
fn write_witness(path: &Path, size: u64, root: &Hash) -> std::io::Result<()> {
    use std::io::Write;
    let mut fresh = path.as_os_str().to_owned();
    fresh.push(".new");
    let fresh = std::path::PathBuf::from(fresh);
    let mut file = std::fs::File::create(&fresh)?;
    writeln!(file, "{size} {}", root.to_hex())?;
    file.sync_all()?;
    std::fs::rename(&fresh, path)
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    bytes?.try_into().ok()
}

/// An audit record queued by [`AuditLog::queue_record`].
pub struct Recording(Receipt<Write, Written>);

impl Recording {
    /// Resolves once the record is durable, with its sequence number.
    pub async fn wait(self) -> Result<i64, Error> {
        audited(self.0.wait().await?)
    }

    /// As [`Recording::wait`], for a record whose caller has had its
    /// answer: it waits until `linger` resolves to ride with another
    /// caller's batch before it is written on its own.
    pub async fn wait_lingering(
        self,
        linger: impl std::future::Future<Output = ()>,
    ) -> Result<i64, Error> {
        audited(self.0.wait_lingering(linger).await?)
    }
}

/// A record's sequence number, from what the writer says it wrote.
fn audited(written: Written) -> Result<i64, Error> {
    match written {
        Written::Audited(seq) => Ok(seq),
        _ => Err(Error::internal("the decision writer mixed up two writes")),
    }
}

impl AuditLog {
    /// Load (or create) the signing key and start the group-commit writer.
    /// With `key_file`, the key lives in that file and not in the store:
    /// whoever can rewrite the store's log then cannot re-sign it.
    pub async fn start(store: &Store, key_file: Option<&Path>) -> Result<AuditLog, Error> {
        let seed = match key_file {
            Some(path) => key_from_file(store, path).await?,
            None => {
                if store.setting(SEED_SETTING).await?.is_none() {
                    refuse_new_key_for_signed_log(store, "no audit_signing_key_file is set")
                        .await?;
                }
                let seed = store
                    .setting_or_init(SEED_SETTING, || hex(&LogSigner::generate().seed_bytes()))
                    .await?;
                unhex(&seed)
                    .ok_or_else(|| Error::internal("the stored audit signing key is corrupt"))?
            }
        };
        let install = store
            .setting_or_init("install_id", || {
                format!("{}", uuid::Uuid::now_v7().simple())
            })
            .await?;
        let writer = store.clone();
        let queue = Arc::new(Batcher::start("decision", MAX_BATCH, move |writes| {
            let store = writer.clone();
            async move { store.write_batch(writes).await }
        }));
        let witness_file = key_file.map(witness_path);
        let witness = match &witness_file {
            Some(path) => read_witness(path)?,
            None => None,
        };
        let log = AuditLog {
            queue,
            tree: Mutex::new(MerkleTree::new()),
            signer: LogSigner::from_seed_bytes(&seed),
            origin: format!("steward/{install}/audit"),
            refusal: Mutex::new(None),
            witness: Mutex::new(witness),
            witness_file,
        };
        log.catch_up(store).await?;
        Ok(log)
    }

    /// Append an event through the group-commit writer; resolves once it is
    /// durable, with its sequence number.
    pub async fn record(&self, ctx: ChangeContext, event: AuditEvent) -> Result<i64, Error> {
        self.queue_record(ctx, event).await?.wait().await
    }

    /// Queue an event for the group-commit writer; the receipt resolves once
    /// it is durable, with its sequence number.
    pub async fn queue_record(
        &self,
        ctx: ChangeContext,
        event: AuditEvent,
    ) -> Result<Recording, Error> {
        // Refused here, alone: in the writer's batch, one statement a store
        // refuses fails every record committed with it.
        steward_store::audit::storable(&event)?;
        let receipt = self
            .queue
            .enqueue(Write::Audit(Box::new((ctx, event))))
            .await?;
        Ok(Recording(receipt))
    }

    /// The group-commit writer audit records go through; quota reservations
    /// share it, so a batch of decisions costs one commit.
    pub fn writer(&self) -> &Writer {
        &self.queue
    }

    fn tree(&self) -> std::sync::MutexGuard<'_, MerkleTree> {
        self.tree
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bring the in-memory tree up to the store's log. Returns the size.
    pub async fn catch_up(&self, store: &Store) -> Result<u64, Error> {
        let size = store.audit_size().await?;
        let have = i64::try_from(self.tree().len()).unwrap_or(i64::MAX);
        let mut next = have + 1;
        while next <= size {
            let to = (next + 50_000 - 1).min(size);
            let leaves = store.audit_leaves(next, to).await?;
            let mut tree = self.tree();
            for (seq, leaf) in leaves {
                // Another caller caught up meanwhile with the same leaves.
                if seq <= i64::try_from(tree.len()).unwrap_or(i64::MAX) {
                    continue;
                }
                if i64::try_from(tree.len()).unwrap_or(i64::MAX) + 1 != seq {
                    return Err(Error::internal(format!(
                        "audit entry {} is missing from the store",
                        tree.len() + 1
                    )));
                }
                tree.push(leaf);
            }
            next = i64::try_from(tree.len()).unwrap_or(i64::MAX) + 1;
            if next <= to {
                return Err(Error::internal(format!(
                    "audit entry {next} is missing from the store"
                )));
            }
        }
        Ok(self.tree().len())
    }

    /// The public key that verifies checkpoints (standard base64).
    pub fn public_key(&self) -> String {
        self.signer.public_key_base64()
    }

    /// The key id of the signing key.
    pub fn key_id(&self) -> String {
        self.signer.key_id()
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Catch up, and sign and store a checkpoint if the log grew since the
    /// last one. Returns the latest checkpoint, which the in-memory tree
    /// always covers (proofs and exports are built from both). Refuses to
    /// sign when the stored history does not extend the latest checkpoint.
    pub async fn checkpoint(&self, store: &Store) -> Result<Option<SignedTreeHead>, Error> {
        let mut size = self.catch_up(store).await?;
        let latest = store.latest_checkpoint().await?;
        // Another node may have appended and signed since the catch-up.
        if latest.as_ref().is_some_and(|c| c.head.size > size) {
            size = self.catch_up(store).await?;
        }
        // Checkpoints removed from the store: the history is checked
        // against the largest one this node knows was signed.
        let witness = *self
            .witness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, root)) = witness
            && latest.as_ref().is_none_or(|c| c.head.size < at)
        {
            self.check_extends(store, at, root, None).await?;
        }
        if size == 0 || latest.as_ref().is_some_and(|c| c.head.size >= size) {
            return Ok(latest);
        }
        if let Some(last) = &latest {
            self.check_extends(store, last.head.size, last.head.root, Some(last))
                .await?;
        }
        let root = self
            .tree()
            .root_at(size)
            .map_err(|e| Error::internal(e.to_string()))?;
        let sth = self.signer.sign(TreeHead {
            origin: self.origin.clone(),
            size,
            root,
            time_ms: Utc::now().timestamp_millis(),
        });
        store.insert_checkpoint(&sth).await?;
        self.witnessed(size, root);
        Ok(Some(sth))
    }

    /// Keep `size`, `root` as the witness if it is larger than the one
    /// kept, in memory and in the witness file (a failure to write it is
    /// logged: the checkpoint is already stored).
    fn witnessed(&self, size: u64, root: Hash) {
        let mut witness = self
            .witness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if witness.is_some_and(|(at, _)| at >= size) {
            return;
        }
        *witness = Some((size, root));
        if let Some(path) = &self.witness_file
            && let Err(e) = write_witness(path, size, &root)
        {
            tracing::error!(file = %path.display(), error = %e,
                "cannot write the audit log's witness; a deletion of checkpoints \
                 from the store would go unnoticed after a restart");
        }
    }

    fn refusal(&self) -> std::sync::MutexGuard<'_, Option<Refusal>> {
        self.refusal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the tree extends the checkpoint (`size`, `root`): the
    /// stored one's signature (`signed`) is the log's and the tree's first
    /// `size` leaves give its root. Otherwise the refusal, logged once per
    /// checkpoint, as an error.
    async fn check_extends(
        &self,
        store: &Store,
        size: u64,
        root: Hash,
        signed: Option<&SignedTreeHead>,
    ) -> Result<(), Error> {
        let known = self
            .refusal()
            .as_ref()
            .filter(|r| r.size == size && r.root == root)
            .map(|r| r.problem.clone());
        if let Some(problem) = known {
            return Err(Error::internal(problem));
        }
        let signature = signed.map(|last| verify_tree_head(&self.public_key(), last));
        let refusal = if let Some(Err(e)) = signature {
            Refusal {
                size,
                root,
                position: None,
                problem: format!(
                    "The latest stored checkpoint (size {size}) is not validly signed by the \
                     log's key ({e}): no checkpoint is signed after it."
                ),
            }
        } else if self.tree().root_at(size).ok() == Some(root) {
            *self.refusal() = None;
            self.witnessed(size, root);
            return Ok(());
        } else {
            // A mismatch found before, under a smaller checkpoint, is where
            // this one's begins too (the tree has not changed below it): no
            // second scan of the checkpoints as other nodes go on signing.
            let earlier = self
                .refusal()
                .as_ref()
                .filter(|r| r.size < size)
                .and_then(|r| r.position);
            let start = match earlier {
                Some(position) => position,
                None => self.last_matching_checkpoint(store, size).await? + 1,
            };
            let removed = if signed.is_none() {
                format!(
                    " Checkpoints up to size {size}, which this node signed or checked, are \
                     missing from the store."
                )
            } else {
                String::new()
            };
            Refusal {
                size,
                root,
                position: Some(start),
                problem: format!(
                    "The leaf hashes this node read from the store do not match the checkpoint \
                     of size {size}: one or more of entries {start} to {size} were changed in \
                     or removed from the store after they were signed, and no checkpoint is \
                     signed over them.{removed}"
                ),
            }
        };
        // Logged when the refusal's position is new, not at every
        // checkpoint other nodes sign over the same mismatch.
        let repeated = self
            .refusal()
            .as_ref()
            .is_some_and(|r| r.position.is_some() && r.position == refusal.position);
        if !repeated {
            tracing::error!(
                checkpoint_size = size,
                first_bad_position = refusal.position,
                problem = %refusal.problem,
                "refusing to sign an audit checkpoint"
            );
        }
        let problem = refusal.problem.clone();
        *self.refusal() = Some(refusal);
        Err(Error::internal(problem))
    }

    /// The size of the largest validly signed checkpoint below `size` that
    /// the tree matches (0 if none): entries up to it are vouched for.
    async fn last_matching_checkpoint(&self, store: &Store, size: u64) -> Result<u64, Error> {
        let below = i64::try_from(size).unwrap_or(i64::MAX) - 1;
        let checkpoints = store.checkpoints_between(1, below).await?;
        let key = self.public_key();
        let tree = self.tree();
        Ok(checkpoints
            .iter()
            .rev()
            .find(|c| {
                verify_tree_head(&key, c).is_ok()
                    && tree.root_at(c.head.size).ok() == Some(c.head.root)
            })
            .map_or(0, |c| c.head.size))
    }

    /// Sign an export bundle's manifest with the log's key.
    pub fn sign_manifest(&self, manifest: BundleManifest) -> SignedManifest {
        self.signer.sign_manifest(manifest)
    }

    /// The roots of the perfect subtrees covering the first `size` entries
    /// (what an export starting after entry `size` carries).
    pub fn prefix_subtrees(&self, size: u64) -> Result<Vec<Hash>, Error> {
        self.tree()
            .prefix_subtrees(size)
            .map_err(|e| Error::internal(e.to_string()))
    }

    /// The leaf hash, inclusion proof and root for entry `seq` in a tree of `size`.
    pub fn inclusion(&self, seq: u64, size: u64) -> Result<(Hash, Vec<Hash>, Hash), Error> {
        let tree = self.tree();
        let bad = |m: String| Error::new(steward_types::ErrorCode::InvalidQuery, m);
        if size > tree.len() {
            return Err(bad(format!(
                "size: the log never had {size} entries (it has {})",
                tree.len()
            )));
        }
        if seq == 0 || seq > size {
            return Err(bad(format!(
                "seq: entry {seq} is not in a tree of {size} entries"
            )));
        }
        let leaf = tree
            .leaf(seq - 1)
            .ok_or_else(|| bad(format!("seq: no entry {seq}")))?;
        let proof = tree
            .inclusion_proof(seq - 1, size)
            .map_err(|e| bad(e.to_string()))?;
        let root = tree.root_at(size).map_err(|e| bad(e.to_string()))?;
        Ok((leaf, proof, root))
    }

    /// The consistency proof between two sizes, with both roots.
    pub fn consistency(&self, from: u64, to: u64) -> Result<(Hash, Hash, Vec<Hash>), Error> {
        let tree = self.tree();
        let bad = |m: String| Error::new(steward_types::ErrorCode::InvalidQuery, m);
        if to > tree.len() {
            return Err(bad(format!(
                "to: the log never had {to} entries (it has {})",
                tree.len()
            )));
        }
        if from > to {
            return Err(bad(format!("from: {from} is after to: {to}")));
        }
        let proof = tree
            .consistency_proof(from, to)
            .map_err(|e| bad(e.to_string()))?;
        let old = tree.root_at(from).map_err(|e| bad(e.to_string()))?;
        let new = tree.root_at(to).map_err(|e| bad(e.to_string()))?;
        Ok((old, new, proof))
    }

    /// Verify the whole stored log against its stored checkpoints: every
    /// entry re-encoded and re-hashed, sequence without gaps, every
    /// checkpoint's signature and root. Names the first bad position. A row
    /// that cannot be read back is reported like any other tampering, and
    /// so is this node's refusal to sign (see [`AuditLog::checkpoint`]).
    pub async fn verify_store(&self, store: &Store) -> Result<VerifyReport, Error> {
        let mut checkpoints = Vec::new();
        let mut unreadable = None;
        for stored in store.checkpoints_as_stored().await? {
            match stored {
                Ok(checkpoint) => checkpoints.push(checkpoint),
                Err((size, why)) => {
                    unreadable.get_or_insert(format!(
                        "The stored checkpoint of size {size} cannot be read back: {why}."
                    ));
                }
            }
        }
        let mut verifier = LogVerifier::new(&checkpoints, &self.public_key());
        if let Some(problem) = unreadable {
            verifier.reject_log(problem);
        }
        let mut cover = PruneCover::read(store).await?;
        let mut reread = false;
        let mut after = 0i64;
        'pages: loop {
            let page = store.audit_rows_all(after, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for row in page {
                let seq = u64::try_from(row.seq).unwrap_or(0);
                let (entry, leaf, pruned) = match row.read {
                    Ok(read) => read,
                    Err(why) => {
                        verifier.reject(
                            seq,
                            format!(
                                "Entry {seq} cannot be read back from the store ({why}): its row \
                                 was modified or damaged."
                            ),
                        );
                        break 'pages;
                    }
                };
                let stored = match leaf.as_deref().map(Hash::from_hex).transpose() {
                    Ok(stored) => stored,
                    Err(e) => {
                        verifier.reject(
                            seq,
                            format!(
                                "Entry {seq} was modified: the leaf hash stored with it is not a \
                                 hash ({e})."
                            ),
                        );
                        break 'pages;
                    }
                };
                let time = entry.time.timestamp_millis();
                // Only a recorded pruning explains a missing payload (one
                // may have run since the prunings were read: they are read
                // again once before this is called tampering).
                let mut explained = !pruned || cover.covers(&entry.tenant_id, entry.seq, time);
                if !explained && !reread {
                    reread = true;
                    cover = PruneCover::read(store).await?;
                    explained = cover.covers(&entry.tenant_id, entry.seq, time);
                }
                let going = match (pruned, stored) {
                    (true, Some(_)) if !explained => verifier.reject(
                        seq,
                        format!(
                            "Entry {seq} has no payload, but no retention pruning recorded in the log removed it (it is too recent, or its tenant was under a legal hold)."
                        ),
                    ),
                    (true, Some(h)) => verifier.push_pruned(seq, h),
                    (true, None) => verifier.reject(
                        seq,
                        format!(
                            "Entry {seq} was modified: it has neither its payload nor the leaf \
                             hash that would stand for it."
                        ),
                    ),
                    _ => verifier.push(seq, &canonical_entry(&entry), stored),
                };
                if !going {
                    break 'pages;
                }
            }
        }
        let mut report = verifier.finish();
        if report.ok
            && let Some(refusal) = self.refusal().clone()
        {
            report.ok = false;
            report.first_bad_position = refusal.position;
            report.problem = Some(format!(
                "{} The store's rows verify now: restart this node to read them again.",
                refusal.problem
            ));
        }
        Ok(report)
    }
}

/// Which entries the log's recorded prunings may have emptied: an entry
/// older than the cut-off of a pruning recorded after it, whose tenant that
/// pruning did not leave alone (its record names the tenants under a legal
/// hold; for an older record that does not, the holds table says).
struct PruneCover {
    prunings: Vec<Pruning>,
    /// Tenant → (created, released) of its holds.
    holds: HashMap<String, Vec<(i64, Option<i64>)>>,
    /// Tenant → for each pruning, the latest cut-off of it and those after
    /// it that applied to the tenant (computed when first needed).
    latest: HashMap<String, Vec<i64>>,
}

impl PruneCover {
    fn new(prunings: Vec<Pruning>, holds: Vec<(String, i64, Option<i64>)>) -> Self {
        let mut by_tenant: HashMap<String, Vec<(i64, Option<i64>)>> = HashMap::new();
        for (tenant, created, released) in holds {
            by_tenant
                .entry(tenant)
                .or_default()
                .push((created, released));
        }
        PruneCover {
            prunings,
            holds: by_tenant,
            latest: HashMap::new(),
        }
    }

    async fn read(store: &Store) -> Result<Self, Error> {
        Ok(Self::new(
            store.prune_records().await?,
            store.all_legal_holds().await?,
        ))
    }

    fn covers(&mut self, tenant: &str, seq: i64, time: i64) -> bool {
        let first_after = self.prunings.partition_point(|p| p.seq <= seq);
        if !self.latest.contains_key(tenant) {
            let holds = self.holds.get(tenant).map(Vec::as_slice).unwrap_or(&[]);
            let left_alone = |p: &Pruning| match &p.held {
                Some(held) => held.iter().any(|t| t == tenant),
                None => holds
                    .iter()
                    .any(|(from, to)| *from <= p.time && to.is_none_or(|to| p.time < to)),
            };
            let mut latest = vec![i64::MIN; self.prunings.len() + 1];
            for (i, p) in self.prunings.iter().enumerate().rev() {
                let applied = if left_alone(p) { i64::MIN } else { p.cutoff };
                latest[i] = latest[i + 1].max(applied);
            }
            self.latest.insert(tenant.to_string(), latest);
        }
        self.latest[tenant][first_after] > time
    }
}

#[cfg(test)]
mod tests {
    use super::PruneCover;
    use steward_store::audit::Pruning;

    fn pruning(seq: i64, time: i64, cutoff: i64, held: Option<&[&str]>) -> Pruning {
        Pruning {
            seq,
            time,
            cutoff,
            held: held.map(|h| h.iter().map(|t| t.to_string()).collect()),
        }
    }

    #[test]
    fn only_a_later_pruning_outside_a_hold_explains_a_missing_payload() {
        // Prunings at seq 100 (time 1000, cut-off 500) and 200 (time 3000,
        // cut-off 2500), recorded without their held tenants; tenant "held"
        // was under a hold from 2000 on.
        let mut cover = PruneCover::new(
            vec![
                pruning(100, 1000, 500, None),
                pruning(200, 3000, 2500, None),
            ],
            vec![("held".into(), 2000, None), ("freed".into(), 0, Some(900))],
        );
        assert!(cover.covers("t", 10, 400));
        assert!(cover.covers("t", 150, 2000));
        // Too recent for any pruning, or recorded after the last one.
        assert!(!cover.covers("t", 150, 2600));
        assert!(!cover.covers("t", 250, 10));
        // The hold kept the second pruning away; the first was before it.
        assert!(cover.covers("held", 10, 400));
        assert!(!cover.covers("held", 150, 2000));
        // A hold released before a pruning does not matter.
        assert!(cover.covers("freed", 10, 400));
        assert!(!PruneCover::new(vec![], vec![]).covers("t", 1, 0));
        // A record naming the tenants it left alone is believed over the
        // holds table (whose times may be skewed).
        let mut cover = PruneCover::new(
            vec![pruning(100, 1000, 500, Some(&["held"]))],
            vec![("freed".into(), 0, Some(2000))],
        );
        assert!(!cover.covers("held", 10, 400));
        assert!(cover.covers("freed", 10, 400));
    }

    /// The witness file: none before the first checkpoint, read back as
    /// written, replaced whole, and a file that is not `SIZE ROOT` stops
    /// the start rather than being taken for no witness.
    #[test]
    fn the_witness_reads_back_and_refuses_garbage() {
        use super::{read_witness, witness_path, write_witness};
        let dir = std::env::temp_dir().join(format!("steward-witness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = witness_path(&dir.join("audit.key"));
        assert!(path.ends_with("audit.key.head"));
        let _ = std::fs::remove_file(&path);
        assert_eq!(read_witness(&path).unwrap(), None);
        let root = steward_audit::Hash::from_hex(&"ab".repeat(32)).unwrap();
        write_witness(&path, 7, &root).unwrap();
        write_witness(&path, 9, &root).unwrap();
        assert_eq!(read_witness(&path).unwrap(), Some((9, root)));
        std::fs::write(&path, "nine roots\n").unwrap();
        let refused = read_witness(&path).unwrap_err();
        assert!(
            refused.message.contains("audit.key.head"),
            "{}",
            refused.message
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
