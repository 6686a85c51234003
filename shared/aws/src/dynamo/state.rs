//! The state port: engagements, other aggregates, the audit trail, operator listings.

use super::idempotency::{IN_PROGRESS, record_from_item};
use super::*;
use o2c_domain::aggregate::AggregateBody;
use o2c_domain::exception_case::{CaseStatus, ExceptionCase};

impl DynamoStore {
    fn engagement_item(&self, w: &StateWrite) -> Result<Item, O2cError> {
        let e = &w.engagement;
        let mut item = to_item(e)?;
        let version = w.expected.next();
        let open = e.has_open_exception();
        let sk_time = format!("{}#{}", e.updated_at.to_rfc3339(), e.engagement_id);
        item.insert("PK".into(), s(eng_pk(&e.engagement_id)));
        item.insert("SK".into(), s("STATE"));
        item.insert("version".into(), n(version));
        item.insert("open_exception".into(), AttributeValue::Bool(open));
        item.insert("GSI1PK".into(), s(format!("STATUS#{}#{}", e.status.as_str(), shard(&e.engagement_id))));
        item.insert("GSI1SK".into(), s(sk_time.clone()));
        if open {
            // Sparse index: only engagements with an open exception have GSI2 keys.
            item.insert("GSI2PK".into(), s(format!("EXCEPTIONS#OPEN#{}", shard(&e.engagement_id))));
            item.insert("GSI2SK".into(), s(sk_time));
        }
        let size = item_size(&item);
        if size > MAX_ITEM_BYTES {
            return Err(O2cError::Bug(format!(
                "engagement {} is {size} bytes, over the {MAX_ITEM_BYTES}-byte budget under DynamoDB's 400 KB item limit",
                e.engagement_id
            )));
        }
        Ok(item)
    }

    pub(super) fn state_put(&self, w: &StateWrite) -> Result<Put, O2cError> {
        let b = Put::builder().table_name(&self.tables.state).set_item(Some(self.engagement_item(w)?));
        let b = match w.expected {
            ExpectedVersion::New => b.condition_expression("attribute_not_exists(PK)"),
            ExpectedVersion::Is(v) => {
                b.condition_expression("#v = :v").expression_attribute_names("#v", "version").expression_attribute_values(":v", n(v))
            }
        };
        b.build().map_err(|e| O2cError::Bug(e.to_string()))
    }

    fn audit_put(&self, a: &AuditEntry) -> Result<Put, O2cError> {
        let mut item = to_item(a)?;
        item.insert("PK".into(), s(eng_pk(&a.engagement_id)));
        item.insert("SK".into(), s(format!("AUDIT#{}#{}#{}", a.at.format("%Y-%m-%dT%H:%M:%S%.6fZ"), a.step, a.event_id)));
        Put::builder().table_name(&self.tables.state).set_item(Some(item)).build().map_err(|e| O2cError::Bug(e.to_string()))
    }
}

/// The stored form of an aggregate body (without keys and version).
fn aggregate_item(body: &AggregateBody) -> Result<Item, O2cError> {
    // Compressed kinds (`AggregateKind::compressed`) keep a run that rewrites 32 WIP shards
    // inside one 4 MB transaction, and a customer's receivables under the 400 KB item limit.
    let kind = body.key().kind;
    if !kind.compressed() {
        return to_item(body);
    }
    use std::io::Write;
    let json = serde_json::to_value(body).and_then(|v| serde_json::to_vec(&v)).map_err(|e| O2cError::Bug(e.to_string()))?;
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(json.len() / 4), flate2::Compression::fast());
    gz.write_all(&json).map_err(|e| O2cError::Bug(format!("gzip: {e}")))?;
    let z = gz.finish().map_err(|e| O2cError::Bug(format!("gzip: {e}")))?;
    Ok(HashMap::from([("kind".to_owned(), s(kind.as_str())), ("z".to_owned(), AttributeValue::B(aws_smithy_types::Blob::new(z)))]))
}

/// An aggregate body from its stored item (compressed or mapped).
pub(super) fn aggregate_from_item(item: Item) -> Result<AggregateBody, O2cError> {
    match item.get("z") {
        Some(AttributeValue::B(z)) => {
            use std::io::Read;
            let mut json = Vec::new();
            flate2::read::GzDecoder::new(z.as_ref()).read_to_end(&mut json).map_err(|e| O2cError::Bug(format!("gunzip: {e}")))?;
            serde_json::from_slice::<serde_json::Value>(&json)
                .and_then(|v| <AggregateBody as serde::Deserialize>::deserialize(&v))
                .map_err(|e| O2cError::Bug(format!("stored aggregate: {e}")))
        }
        _ => from_stored_item(item, &["PK", "SK", "version", "GSI1PK", "GSI1SK"]),
    }
}

impl DynamoStore {
    /// The conditional put of an aggregate, and its size.
    pub(super) fn aggregate_put(&self, w: &AggregateWrite) -> Result<(Put, usize), O2cError> {
        let key = w.body.key();
        let mut item = aggregate_item(&w.body)?;
        item.insert("PK".into(), s(key.partition_key()));
        item.insert("SK".into(), s(key.sort_key()));
        item.insert("version".into(), n(w.expected.next()));
        if let AggregateBody::ExceptionCase(c) = &w.body {
            // The operator queue: GSI1 partitions per status, sharded like engagements.
            item.insert("GSI1PK".into(), s(case_partition(c.status.as_str(), shard(c.exception_id.as_str()))));
            item.insert("GSI1SK".into(), s(format!("{}#{}", c.raised_at.to_rfc3339(), c.exception_id)));
        }
        let size = item_size(&item);
        if size > key.kind.budget_bytes() {
            return Err(O2cError::Bug(format!(
                "{} {} is {size} bytes, over its {}-byte budget",
                key.kind.as_str(),
                key.id,
                key.kind.budget_bytes()
            )));
        }
        let b = Put::builder().table_name(&self.tables.state).set_item(Some(item));
        let b = match w.expected {
            ExpectedVersion::New => b.condition_expression("attribute_not_exists(PK)"),
            ExpectedVersion::Is(v) => {
                b.condition_expression("#v = :v").expression_attribute_names("#v", "version").expression_attribute_values(":v", n(v))
            }
        };
        Ok((b.build().map_err(|e| O2cError::Bug(e.to_string()))?, size))
    }
}

/// The GSI1 partition of exception cases in `status`, shard `shard`.
fn case_partition(status: &str, shard: u32) -> String {
    format!("CASES#{status}#{shard}")
}

impl EngagementStore for DynamoStore {
    async fn exception_cases(&self, f: &CaseFilter) -> Result<Vec<ExceptionCase>, O2cError> {
        let statuses: Vec<CaseStatus> = match f.status {
            Some(st) => vec![st],
            None => CaseStatus::ALL.into_iter().filter(|st| !f.open_only || st.is_open()).collect(),
        };
        let mut keys = Vec::new();
        for st in statuses {
            for sh in 0..STATUS_SHARDS {
                // GSI1 projects keys only for cases (newest first per partition); read the item itself.
                for item in self.query_index("GSI1", "GSI1PK", case_partition(st.as_str(), sh), f.limit()).await? {
                    if let Some(id) = get_s(&item, "PK").and_then(|pk| pk.strip_prefix("EXC#")) {
                        keys.push(AggregateKey::exception_case(id));
                    }
                }
            }
        }
        let loaded = self.load_aggregates(&keys).await?;
        let mut cases: Vec<ExceptionCase> = loaded
            .items
            .into_iter()
            .filter_map(|a| match a.body {
                // The index is eventually consistent: keep what the item itself says.
                AggregateBody::ExceptionCase(c) if f.wants(&c) => Some(c),
                _ => None,
            })
            .collect();
        queue_order(&mut cases);
        cases.dedup_by(|a, b| a.exception_id == b.exception_id);
        cases.truncate(f.limit());
        Ok(cases)
    }

    async fn load_all(&self, kind: AggregateKind, owner: &str) -> Result<Loaded, O2cError> {
        let pk = format!("{}{owner}", kind.owner().prefix());
        let items = self.query_all(&pk, Some(kind.sort_key())).await?;
        let mut loaded = Loaded::default();
        for item in items {
            // `begins_with` on `WIP` would also match a kind named `WIPX`: keep exact prefixes.
            let sk = get_s(&item, "SK").unwrap_or_default();
            if sk != kind.sort_key() && !sk.starts_with(&format!("{}#", kind.sort_key())) {
                continue;
            }
            let version = get_n(&item, "version").unwrap_or(0) as u64;
            loaded.items.push(LoadedAggregate { body: aggregate_from_item(item)?, version });
        }
        Ok(loaded)
    }

    async fn load_aggregates(&self, keys: &[AggregateKey]) -> Result<Loaded, O2cError> {
        let mut loaded = Loaded::default();
        for k in keys {
            self.counts.read();
            let out = self
                .client
                .get_item()
                .table_name(&self.tables.state)
                .key("PK", s(k.partition_key()))
                .key("SK", s(k.sort_key()))
                .consistent_read(true)
                .send()
                .await
                .map_err(dep)?;
            if let Some(item) = out.item() {
                let version = get_n(item, "version").unwrap_or(0) as u64;
                loaded.items.push(LoadedAggregate { body: aggregate_from_item(item.clone())?, version });
            }
        }
        Ok(loaded)
    }

    async fn load(&self, engagement_id: &str) -> Result<Option<Versioned<Engagement>>, O2cError> {
        self.counts.read();
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.state)
            .key("PK", s(eng_pk(engagement_id)))
            .key("SK", s("STATE"))
            .consistent_read(true)
            .send()
            .await
            .map_err(dep)?;
        let Some(item) = out.item() else { return Ok(None) };
        let version = get_n(item, "version").unwrap_or(0) as u64;
        let value = from_stored_item(item.clone(), &["PK", "SK", "version", "open_exception", "GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK"])?;
        Ok(Some(Versioned { value, version }))
    }

    async fn commit(&self, c: Commit) -> Result<CommitOutcome, O2cError> {
        o2c_app::ports::each_written_once(&c.others)?;
        // One transaction (≤ 100 items): the idempotency record (or a condition check that our
        // reservation still holds), the state, the audit entry and the aggregates the step
        // changed — at most 32 WIP shards in an invoice run, at most 64 settled invoice
        // references in a cash application (`MAX_SETTLED_PER_WRITE`).
        let mut items: Vec<TransactWriteItem> = Vec::with_capacity(3);
        match &c.key {
            KeyWrite::Complete(comp) => items.push(TransactWriteItem::builder().put(self.completion_put(comp)?).build()),
            KeyWrite::Hold { key, payload_hash } => {
                let check = ConditionCheck::builder()
                    .table_name(&self.tables.idempotency)
                    .key("id", s(key.clone()))
                    .condition_expression("#st = :ip AND #val = :h")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_names("#val", "validation")
                    .expression_attribute_values(":ip", s(IN_PROGRESS))
                    .expression_attribute_values(":h", s(payload_hash.clone()))
                    .build()
                    .map_err(|e| O2cError::Bug(e.to_string()))?;
                items.push(TransactWriteItem::builder().condition_check(check).build());
            }
            KeyWrite::Untracked => {}
        }
        let key_item = !matches!(c.key, KeyWrite::Untracked);
        let state_index = c.state.as_ref().map(|_| items.len());
        if let Some(w) = &c.state {
            items.push(TransactWriteItem::builder().put(self.state_put(w)?).build());
        }
        let others = items.len()..items.len() + c.others.len();
        let mut bytes = 0;
        for w in &c.others {
            let (put, size) = self.aggregate_put(w)?;
            bytes += size;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        // The engagement (≤ 350 KB), the audit entry and the key record come on top.
        if bytes + MAX_ITEM_BYTES > MAX_TRANSACTION_BYTES {
            return Err(O2cError::Bug(format!(
                "a commit of {} aggregates is {bytes} bytes: with the engagement it could pass DynamoDB's {MAX_TRANSACTION_BYTES}-byte transaction limit",
                c.others.len()
            )));
        }
        if let Some(a) = &c.audit {
            items.push(TransactWriteItem::builder().put(self.audit_put(a)?).build());
        }
        if items.is_empty() {
            return Ok(CommitOutcome::Committed { version: None });
        }
        self.counts.write();
        let step = c.audit.as_ref().map_or("untracked", |a| a.step.as_str()).to_owned();
        let outcome = self.send_commit(c, items, key_item, state_index, others).await;
        self.counts.commit(&step, matches!(outcome, Ok(CommitOutcome::VersionConflict)));
        outcome
    }

    async fn audit_trail(&self, engagement_id: &str) -> Result<Vec<AuditEntry>, O2cError> {
        let items = self.query_all(&eng_pk(engagement_id), Some("AUDIT#")).await?;
        items.into_iter().map(|i| from_stored_item(i, &["PK", "SK"])).collect()
    }

    async fn list(&self, f: &EngagementFilter) -> Result<Vec<EngagementSummary>, O2cError> {
        let limit = if f.limit == 0 { 100 } else { f.limit };
        let mut partitions: Vec<(&str, &str, String)> = Vec::new();
        if f.open_exceptions {
            partitions.extend((0..STATUS_SHARDS).map(|sh| ("GSI2", "GSI2PK", format!("EXCEPTIONS#OPEN#{sh}"))));
        } else {
            let statuses: Vec<String> = match &f.status {
                Some(st) => vec![st.clone()],
                None => EngagementStatus::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
            };
            for st in statuses {
                partitions.extend((0..STATUS_SHARDS).map(|sh| ("GSI1", "GSI1PK", format!("STATUS#{st}#{sh}"))));
            }
        }
        let mut rows = Vec::new();
        for (index, attr, pk) in partitions {
            // Paging by id reads whole partitions (the index sorts by time): fine for the
            // fan-out of a scheduled run; an id-keyed index would make it O(page).
            let items = match &f.after {
                Some(_) => self.query_index_all(index, attr, pk).await?,
                None => self.query_index(index, attr, pk, limit).await?,
            };
            for item in items {
                if f.status.as_deref().is_some_and(|st| get_s(&item, "status") != Some(st)) {
                    continue;
                }
                if let Some(after) = &f.after
                    && get_s(&item, "engagement_id").is_none_or(|id| id <= after.as_str())
                {
                    continue;
                }
                rows.push(EngagementSummary {
                    engagement_id: get_s(&item, "engagement_id").unwrap_or_default().to_owned(),
                    status: get_s(&item, "status").unwrap_or_default().to_owned(),
                    open_exception: item.get("open_exception").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
                    updated_at: get_s(&item, "updated_at")
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&Utc))
                        .unwrap_or_default(),
                    version: get_n(&item, "version").unwrap_or(0) as u64,
                });
            }
        }
        if f.after.is_some() {
            rows.sort_by(|a, b| a.engagement_id.cmp(&b.engagement_id));
        } else {
            rows.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
        }
        rows.truncate(limit);
        Ok(rows)
    }
}

impl DynamoStore {
    /// Sends a commit's transaction and maps a cancellation to the outcome.
    async fn send_commit(
        &self,
        c: Commit,
        items: Vec<TransactWriteItem>,
        key_item: bool,
        state_index: Option<usize>,
        others: std::ops::Range<usize>,
    ) -> Result<CommitOutcome, O2cError> {
        let started = Instant::now();
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => {
                debug!(elapsed_ms = started.elapsed().as_millis() as u64, "committed");
                Ok(CommitOutcome::Committed { version: c.state.as_ref().map(|w| w.expected.next()) })
            }
            Err(err) => match err.into_service_error() {
                TransactWriteItemsError::TransactionCanceledException(e) => {
                    let reasons = e.cancellation_reasons();
                    let failed = |i: usize| reasons.get(i).and_then(|r| r.code()) == Some("ConditionalCheckFailed");
                    if key_item && failed(0) {
                        let KeyWrite::Complete(comp) = &c.key else {
                            return Ok(CommitOutcome::ReservationLost);
                        };
                        let rec = match reasons[0].item() {
                            Some(item) if !item.is_empty() => Some(record_from_item(item)?),
                            _ => self.get_record(&comp.key).await?,
                        };
                        return Ok(match rec {
                            Some(r) if r.status == IdempotencyStatus::Completed || comp.mode == CompletionMode::Fresh => {
                                CommitOutcome::AlreadyCompleted(r)
                            }
                            _ => CommitOutcome::ReservationLost,
                        });
                    }
                    if state_index.is_some_and(failed) || others.clone().any(failed) {
                        return Ok(CommitOutcome::VersionConflict);
                    }
                    // TransactionConflict: another transaction touched the same items; re-run.
                    if reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                        return Ok(CommitOutcome::VersionConflict);
                    }
                    Err(O2cError::dependency(
                        "dynamodb",
                        format!("transaction cancelled: {:?}", reasons.iter().map(|r| r.code()).collect::<Vec<_>>()),
                    ))
                }
                other => Err(O2cError::dependency("dynamodb", format!("{other:?}"))),
            },
        }
    }
}
