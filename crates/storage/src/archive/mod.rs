//! The order archive: finished orders leave the live tables for Parquet files, and only
//! once the files have been read back and found to hold exactly what was read.
//!
//! Layout of an archive directory (one run of `lastmile archive` adds one run id):
//!
//! ```text
//! DIR/tenant=<tenant id>/day=<YYYY-MM-DD>/{orders,items,events,proof}-<run>.parquet
//! DIR/manifests/<run>.json      files, row counts, SHA-256 of each file and of its rows
//! ```
//!
//! The day is the UTC day the order last changed (when it finished). A partition gets one
//! set of files per run, never rewritten, so a later run adds files beside an earlier one's.
//!
//! A run: (1) the manifest is written in state `writing`; (2) each partition's files are
//! written and fsynced; (3) every file is read back, its SHA-256 taken and its rows decoded
//! and checksummed against what was read from the database; (4) the manifest turns
//! `exported`; (5) the orders named in the *re-read* orders files are deleted with their
//! dependent rows, in bounded write transactions, each order only while its live row still
//! matches the export (same `updated_at`, event and photo counts, every event published,
//! no sync-back job still to run); (6) the manifest turns `complete`. A run interrupted
//! before (4) is discarded by the next run (its files were never trusted, nothing was
//! deleted); one interrupted after (4) is finished by the next run before anything new is
//! exported, so no order is exported twice.
//!
//! What an archived order takes with it: its row, items, events and photos (exported), and
//! rows that only mean something while the order is live (deleted, not exported): offers
//! and assignments (the events record each offer, acceptance and release), attention flags,
//! geocoding attempts, customer choices, released stock reservations, and finished
//! sync-back jobs. Not touched: payments (a ledger of their own, not keyed to the order's
//! life), delivery legs (what the ETA model learns from), raw payloads and dead letters
//! (kept by their own rules), webhook deliveries (their payload is self-contained).

mod table;

use crate::{corrupt, from_ms, get, Db, Dialect, Result, StorageError};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use table::{content_checksum, file_checksum, Cell, Rows, Table, EVENTS, ITEMS, ORDERS, PROOF, TABLES};

/// Order ids per SELECT while exporting.
const EXPORT_CHUNK: usize = 500;
/// Orders deleted per write transaction.
const DELETE_CHUNK: usize = 200;

/// The finished statuses (`OrderStatus::is_terminal`), as SQL.
const TERMINAL: &str = "('delivered', 'failed', 'cancelled')";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Writing,
    Exported,
    Complete,
}

/// One file of a run, as the manifest records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArchivedFile {
    /// Relative to the archive directory.
    pub path: String,
    pub table: String,
    pub tenant_id: String,
    pub day: String,
    pub rows: u64,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
    /// SHA-256 over the decoded rows' values (see `table::content_checksum`).
    pub content_sha256: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub run: String,
    pub state: RunState,
    /// Orders that last changed before this instant (unix ms) were eligible.
    pub cutoff_ms: i64,
    pub started_at: String,
    pub files: Vec<ArchivedFile>,
    /// Orders exported by this run.
    pub orders: u64,
    /// Orders removed from the live tables.
    pub deleted: u64,
    /// Orders exported but left live because they changed after the export.
    pub left_live: Vec<String>,
}

/// What [`Db::archive_finished`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ArchiveReport {
    /// Runs interrupted after their export and finished now.
    pub resumed_runs: Vec<String>,
    /// Runs interrupted while writing, whose files were removed.
    pub discarded_runs: Vec<String>,
    /// This run's id, or none when no order was eligible.
    pub run: Option<String>,
    pub orders: u64,
    pub deleted: u64,
    pub left_live: Vec<String>,
    pub files: usize,
}

/// What [`verify_archive`] found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VerifyReport {
    pub runs: usize,
    pub files: usize,
    pub rows: u64,
    /// Every mismatch, missing or stray file; empty when the archive is sound.
    pub problems: Vec<String>,
}

impl Db {
    /// Archive finished orders that last changed before `cutoff_ms` into `dir` (see the
    /// module docs), then remove them from the live tables.
    pub async fn archive_finished(&self, dir: &Path, cutoff_ms: i64) -> Result<ArchiveReport> {
        fs::create_dir_all(dir.join("manifests")).map_err(io("creating the archive directory"))?;
        let lock = fs::File::create(dir.join(".lock")).map_err(io("opening the archive lock"))?;
        lock.try_lock()
            .map_err(|e| StorageError::Conflict(format!("another archive run holds {}: {e}", dir.display())))?;
        let mut report = ArchiveReport::default();
        for manifest in read_manifests(dir)? {
            match manifest.state {
                RunState::Complete => {}
                RunState::Writing => {
                    discard_run(dir, &manifest.run)?;
                    report.discarded_runs.push(manifest.run);
                }
                RunState::Exported => {
                    self.finish_run(dir, manifest.clone()).await?;
                    report.resumed_runs.push(manifest.run);
                }
            }
        }
        let eligible = self.eligible_orders(cutoff_ms).await?;
        if eligible.is_empty() {
            return Ok(report);
        }
        let run = format!(
            "{}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let manifest = self.export_run(dir, &run, cutoff_ms, &eligible).await?;
        let done = self.finish_run(dir, manifest).await?;
        report.run = Some(run);
        report.orders = done.orders;
        report.deleted = done.deleted;
        report.left_live = done.left_live;
        report.files = done.files.len();
        Ok(report)
    }

    /// Steps 1-4 of a run: write, fsync and read back the files of `eligible`; the manifest
    /// it returns (and leaves on disk) is `exported`.
    async fn export_run(
        &self,
        dir: &Path,
        run: &str,
        cutoff_ms: i64,
        eligible: &BTreeMap<(String, String), Vec<String>>,
    ) -> Result<Manifest> {
        let mut manifest = Manifest {
            format: 1,
            run: run.to_owned(),
            state: RunState::Writing,
            cutoff_ms,
            started_at: chrono::Utc::now().to_rfc3339(),
            files: Vec::new(),
            orders: 0,
            deleted: 0,
            left_live: Vec::new(),
        };
        write_manifest(dir, &manifest)?;
        for ((tenant, day), ids) in eligible {
            let exported = self.export_partition(tenant, ids).await?;
            manifest.orders += exported[0].len() as u64;
            for (t, rows) in TABLES.iter().zip(&exported) {
                let rel = format!("tenant={tenant}/day={day}/{}-{run}.parquet", t.name);
                let content_sha256 = content_checksum(rows);
                write_synced(&dir.join(&rel), &t.write_parquet(rows)?)?;
                manifest.files.push(ArchivedFile {
                    path: rel,
                    table: t.name.to_owned(),
                    tenant_id: tenant.clone(),
                    day: day.clone(),
                    rows: rows.len() as u64,
                    sha256: String::new(),
                    content_sha256,
                });
            }
        }
        // Read everything back before trusting any of it.
        for f in &mut manifest.files {
            let bytes = fs::read(dir.join(&f.path)).map_err(io("reading back an archive file"))?;
            f.sha256 = file_checksum(&bytes);
            let table = Table::by_name(&f.table).ok_or_else(|| corrupt(&f.table))?;
            let rows = table.read_parquet(bytes)?;
            if rows.len() as u64 != f.rows || content_checksum(&rows) != f.content_sha256 {
                return Err(corrupt(format!("{} did not read back as written", f.path)));
            }
        }
        manifest.state = RunState::Exported;
        write_manifest(dir, &manifest)?;
        Ok(manifest)
    }

    /// Finished orders before the cutoff whose every event is published and whose
    /// sync-back is done, grouped by (tenant, day), oldest first.
    async fn eligible_orders(&self, cutoff_ms: i64) -> Result<BTreeMap<(String, String), Vec<String>>> {
        let rows = sqlx::query(&format!(
            "SELECT o.id, o.tenant_id, o.updated_at FROM orders o WHERE o.status IN {TERMINAL} AND o.updated_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.tenant_id = o.tenant_id AND e.subject_id = o.id \
             AND e.published_at IS NULL) \
             AND NOT EXISTS (SELECT 1 FROM sync_jobs j WHERE j.order_id = o.id AND j.state <> 'done') \
             ORDER BY o.tenant_id, o.updated_at, o.id"
        ))
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for row in &rows {
            let tenant: String = get(row, "tenant_id")?;
            if tenant.is_empty() || !tenant.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(corrupt(format!("tenant id {tenant:?} cannot name a directory")));
            }
            let day = from_ms(get(row, "updated_at")?).format("%Y-%m-%d").to_string();
            groups.entry((tenant, day)).or_default().push(get(row, "id")?);
        }
        Ok(groups)
    }

    /// The rows of `ids` (one tenant's), per table in [`TABLES`] order.
    async fn export_partition(&self, tenant: &str, ids: &[String]) -> Result<[Rows; 4]> {
        let mut out: [Rows; 4] = Default::default();
        for chunk in ids.chunks(EXPORT_CHUNK) {
            let list = placeholders(2, chunk.len());
            let queries = [
                (ORDERS, format!("SELECT {} FROM orders WHERE tenant_id = $1 AND id IN ({list}) ORDER BY updated_at, id", ORDERS.select_list())),
                (EVENTS, format!("SELECT {} FROM outbox WHERE tenant_id = $1 AND subject_id IN ({list}) ORDER BY seq", EVENTS.select_list())),
                (PROOF, format!("SELECT {} FROM delivery_photos WHERE tenant_id = $1 AND order_id IN ({list}) ORDER BY created_at, id", PROOF.select_list())),
            ];
            for (t, sql) in queries {
                let mut q = sqlx::query(&sql).bind(tenant);
                for id in chunk {
                    q = q.bind(id);
                }
                let slot = TABLES.iter().position(|x| x.name == t.name).expect("a listed table");
                for row in q.fetch_all(&self.pool).await? {
                    out[slot].push(t.cells(&row)?);
                }
            }
        }
        out[1] = items_of(&out[0])?;
        Ok(out)
    }

    /// Delete what `manifest`'s re-read files name, then mark it complete.
    async fn finish_run(&self, dir: &Path, mut manifest: Manifest) -> Result<Manifest> {
        let mut expected: Vec<Exported> = Vec::new();
        let mut events: HashMap<String, i64> = HashMap::new();
        let mut photos: HashMap<String, i64> = HashMap::new();
        for f in &manifest.files {
            let table = Table::by_name(&f.table).ok_or_else(|| corrupt(&f.table))?;
            let bytes = fs::read(dir.join(&f.path)).map_err(io("reading an archive file"))?;
            if file_checksum(&bytes) != f.sha256 {
                return Err(corrupt(format!("{} changed since it was written; nothing more is deleted", f.path)));
            }
            let rows = table.read_parquet(bytes)?;
            if rows.len() as u64 != f.rows || content_checksum(&rows) != f.content_sha256 {
                return Err(corrupt(format!("{} does not match its manifest; nothing more is deleted", f.path)));
            }
            for row in &rows {
                match table.name {
                    "orders" => expected.push(Exported {
                        id: row[ORDERS.index("id")].text()?.to_owned(),
                        tenant: row[ORDERS.index("tenant_id")].text()?.to_owned(),
                        updated_at: row[ORDERS.index("updated_at")].int()?,
                    }),
                    "events" => *events.entry(row[EVENTS.index("subject_id")].text()?.to_owned()).or_default() += 1,
                    "proof" => *photos.entry(row[PROOF.index("order_id")].text()?.to_owned()).or_default() += 1,
                    _ => {}
                }
            }
        }
        let mut deleted = 0;
        let mut left_live = Vec::new();
        for chunk in expected.chunks(DELETE_CHUNK) {
            let batch: Vec<(Exported, i64, i64)> = chunk
                .iter()
                .map(|o| (o.clone(), events.get(&o.id).copied().unwrap_or(0), photos.get(&o.id).copied().unwrap_or(0)))
                .collect();
            let dialect = self.dialect;
            let (gone, kept) = self.write(move |c| Box::pin(delete_batch(c, dialect, batch))).await?;
            deleted += gone;
            left_live.extend(kept);
        }
        manifest.deleted = deleted;
        manifest.left_live = left_live;
        manifest.state = RunState::Complete;
        write_manifest(dir, &manifest)?;
        Ok(manifest)
    }
}

/// An exported order as its re-read file has it.
#[derive(Debug, Clone)]
struct Exported {
    id: String,
    tenant: String,
    updated_at: i64,
}

/// Tables whose rows about an order go with it, unexported (see the module docs).
const DEPENDENTS: [&str; 7] = [
    "offers",
    "assignments",
    "order_attention",
    "geocode_attempts",
    "customer_choices",
    "stock_reservations",
    "delivery_photos",
];

/// In one write: delete each order of `batch` (with its expected event and photo counts)
/// whose live row still matches; returns how many went and the ids left live.
async fn delete_batch(
    c: &mut crate::WriteConn,
    dialect: Dialect,
    batch: Vec<(Exported, i64, i64)>,
) -> Result<(u64, Vec<String>)> {
    let list = placeholders(1, batch.len());
    // PostgreSQL: lock the orders so nothing changes them between this check and the delete.
    let lock = if dialect == Dialect::Postgres { " FOR UPDATE OF o" } else { "" };
    let sql = format!(
        "SELECT o.id, o.tenant_id, o.status, o.updated_at, \
         (SELECT COUNT(*) FROM outbox e WHERE e.tenant_id = o.tenant_id AND e.subject_id = o.id) AS events, \
         (SELECT COUNT(*) FROM outbox e WHERE e.tenant_id = o.tenant_id AND e.subject_id = o.id \
          AND e.published_at IS NULL) AS unpublished, \
         (SELECT COUNT(*) FROM delivery_photos p WHERE p.tenant_id = o.tenant_id AND p.order_id = o.id) AS photos, \
         (SELECT COUNT(*) FROM sync_jobs j WHERE j.order_id = o.id AND j.state <> 'done') AS open_syncs \
         FROM orders o WHERE o.id IN ({list}){lock}"
    );
    let mut q = sqlx::query(&sql);
    for (o, _, _) in &batch {
        q = q.bind(&o.id);
    }
    let live: HashMap<String, sqlx::any::AnyRow> =
        q.fetch_all(&mut *c).await?.into_iter().map(|r| Ok((get::<String>(&r, "id")?, r))).collect::<Result<_>>()?;
    let mut doomed = Vec::new();
    let mut kept = Vec::new();
    for (o, events, photos) in &batch {
        // Gone already (an earlier attempt of this run got as far as its commit): done.
        let Some(row) = live.get(&o.id) else { continue };
        let status: lastmile_core::OrderStatus = get::<String>(row, "status")?.parse().map_err(corrupt)?;
        let same = get::<String>(row, "tenant_id")? == o.tenant
            && status.is_terminal()
            && get::<i64>(row, "updated_at")? == o.updated_at
            && get::<i64>(row, "events")? == *events
            && get::<i64>(row, "unpublished")? == 0
            && get::<i64>(row, "photos")? == *photos
            && get::<i64>(row, "open_syncs")? == 0;
        if same {
            doomed.push(o.id.clone());
        } else {
            kept.push(o.id.clone());
        }
    }
    if doomed.is_empty() {
        return Ok((0, kept));
    }
    let list = placeholders(1, doomed.len());
    let mut statements: Vec<String> =
        DEPENDENTS.iter().map(|t| format!("DELETE FROM {t} WHERE order_id IN ({list})")).collect();
    statements.push(format!("DELETE FROM sync_jobs WHERE state = 'done' AND order_id IN ({list})"));
    statements.push(format!("DELETE FROM outbox WHERE subject_id IN ({list})"));
    statements.push(format!("DELETE FROM orders WHERE id IN ({list})"));
    let mut gone = 0;
    for sql in &statements {
        let mut q = sqlx::query(sql);
        for id in &doomed {
            q = q.bind(id);
        }
        let done = q.execute(&mut *c).await?;
        if sql.starts_with("DELETE FROM orders") {
            gone = done.rows_affected();
        }
    }
    Ok((gone, kept))
}

/// `$from, $from+1, ...`: `n` numbered placeholders.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// The items file's rows, from the orders' `items_json`.
fn items_of(orders: &Rows) -> Result<Rows> {
    let (id, tenant, items) = (ORDERS.index("id"), ORDERS.index("tenant_id"), ORDERS.index("items_json"));
    let mut out = Vec::new();
    for order in orders {
        let list: Vec<lastmile_core::LineItem> = serde_json::from_str(order[items].text()?)
            .map_err(|e| corrupt(format!("order {:?} items: {e}", order[id])))?;
        for (line, item) in list.into_iter().enumerate() {
            out.push(vec![
                order[id].clone(),
                order[tenant].clone(),
                Cell::Int(line as i64),
                item.sku.map_or(Cell::Null, Cell::Text),
                Cell::Text(item.name),
                Cell::Int(item.quantity),
                Cell::Int(item.unit_price_minor),
            ]);
        }
    }
    debug_assert!(out.iter().all(|r| r.len() == ITEMS.columns.len()));
    Ok(out)
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> StorageError {
    move |e| StorageError::Corrupt(format!("{what}: {e}"))
}

/// Write `bytes` to `path` and fsync the file and its directory.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().expect("archive paths have a parent");
    fs::create_dir_all(parent).map_err(io("creating a partition directory"))?;
    let mut f = fs::File::create(path).map_err(io("creating an archive file"))?;
    f.write_all(bytes).map_err(io("writing an archive file"))?;
    f.sync_all().map_err(io("syncing an archive file"))?;
    fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io("syncing a partition directory"))
}

fn manifest_path(dir: &Path, run: &str) -> PathBuf {
    dir.join("manifests").join(format!("{run}.json"))
}

/// Replace the run's manifest atomically (write aside, fsync, rename).
fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let path = manifest_path(dir, &m.run);
    let tmp = path.with_extension("json.tmp");
    write_synced(&tmp, &serde_json::to_vec_pretty(m).map_err(corrupt)?)?;
    fs::rename(&tmp, &path).map_err(io("replacing a manifest"))?;
    fs::File::open(dir.join("manifests")).and_then(|d| d.sync_all()).map_err(io("syncing the manifests"))
}

fn read_manifests(dir: &Path) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir.join("manifests")) else { return Ok(out) };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let text = fs::read(&p).map_err(io("reading a manifest"))?;
        out.push(serde_json::from_slice(&text).map_err(|e| corrupt(format!("{}: {e}", p.display())))?);
    }
    Ok(out)
}

/// Every `.parquet` file under `tenant=*/day=*`, relative to `dir`.
fn parquet_files(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for tenant in fs::read_dir(dir).map_err(io("listing the archive"))?.flatten() {
        let tname = tenant.file_name().to_string_lossy().into_owned();
        if !tname.starts_with("tenant=") || !tenant.path().is_dir() {
            continue;
        }
        for day in fs::read_dir(tenant.path()).map_err(io("listing a tenant's days"))?.flatten() {
            let dname = day.file_name().to_string_lossy().into_owned();
            if !day.path().is_dir() {
                continue;
            }
            for file in fs::read_dir(day.path()).map_err(io("listing a day's files"))?.flatten() {
                let fname = file.file_name().to_string_lossy().into_owned();
                if fname.ends_with(".parquet") {
                    out.push(format!("{tname}/{dname}/{fname}"));
                }
            }
        }
    }
    Ok(out)
}

/// Remove an interrupted run's files (never verified, nothing deleted for them) and manifest.
fn discard_run(dir: &Path, run: &str) -> Result<()> {
    let suffix = format!("-{run}.parquet");
    for rel in parquet_files(dir)?.into_iter().filter(|p| p.ends_with(&suffix)) {
        fs::remove_file(dir.join(rel)).map_err(io("removing an interrupted run's file"))?;
    }
    fs::remove_file(manifest_path(dir, run)).map_err(io("removing an interrupted run's manifest"))
}

/// Re-read every file every manifest names and check its bytes, row count and rows; report
/// missing and unlisted files and runs that never finished. Needs no database.
pub fn verify_archive(dir: &Path) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    if !dir.is_dir() {
        return Err(corrupt(format!("{} is not a directory", dir.display())));
    }
    let mut listed = std::collections::HashSet::new();
    for m in read_manifests(dir)? {
        report.runs += 1;
        if m.state != RunState::Complete {
            report
                .problems
                .push(format!("run {} is {:?}: the next archive run finishes or discards it", m.run, m.state));
        }
        for f in &m.files {
            listed.insert(f.path.clone());
            report.files += 1;
            let Ok(bytes) = fs::read(dir.join(&f.path)) else {
                report.problems.push(format!("{}: missing", f.path));
                continue;
            };
            if file_checksum(&bytes) != f.sha256 {
                report.problems.push(format!("{}: SHA-256 differs from the manifest", f.path));
            }
            let Some(table) = Table::by_name(&f.table) else {
                report.problems.push(format!("{}: unknown table {}", f.path, f.table));
                continue;
            };
            match table.read_parquet(bytes) {
                Err(e) => report.problems.push(format!("{}: unreadable: {e}", f.path)),
                Ok(rows) => {
                    report.rows += rows.len() as u64;
                    if rows.len() as u64 != f.rows {
                        report.problems.push(format!("{}: {} rows, manifest says {}", f.path, rows.len(), f.rows));
                    }
                    if content_checksum(&rows) != f.content_sha256 {
                        report.problems.push(format!("{}: row checksum differs from the manifest", f.path));
                    }
                }
            }
        }
    }
    for stray in parquet_files(dir)?.into_iter().filter(|p| !listed.contains(p)) {
        report.problems.push(format!("{stray}: in no manifest"));
    }
    report.problems.sort();
    Ok(report)
}

#[cfg(test)]
mod tests;
