//! The idempotency port on the idempotency table (Powertools attribute names).

use super::*;

pub(super) const IN_PROGRESS: &str = IdempotencyStatus::InProgress.as_str_const();
pub(super) const COMPLETED: &str = IdempotencyStatus::Completed.as_str_const();

/// Condition for taking an idempotency key: absent, expired, or held by an in-progress
/// record whose holder is past its deadline.
const KEY_IS_FREE: &str = "attribute_not_exists(#id) OR #exp < :now OR (#st = :ip AND #ipexp < :now_ms)";

fn key_is_free_names() -> HashMap<String, String> {
    [("#id", "id"), ("#exp", "expiration"), ("#st", "status"), ("#ipexp", "in_progress_expiration")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn key_is_free_values(now: DateTime<Utc>) -> HashMap<String, AttributeValue> {
    HashMap::from([(":now".to_owned(), n(now.timestamp())), (":now_ms".to_owned(), n(ms(now))), (":ip".to_owned(), s(IN_PROGRESS))])
}

/// Powertools-compatible attribute names: `id`, `status`, `expiration` (TTL, epoch seconds),
/// `in_progress_expiration` (epoch millis), `validation` (payload hash), `data` (result).
pub(super) fn record_from_item(item: &Item) -> Result<IdempotencyRecord, O2cError> {
    let result =
        get_s(item, "data").map(from_json::<StoredResult>).transpose().map_err(|e| O2cError::Bug(format!("idempotency data: {e}")))?;
    Ok(IdempotencyRecord {
        key: get_s(item, "id").unwrap_or_default().to_owned(),
        status: get_s(item, "status")
            .and_then(IdempotencyStatus::parse)
            .ok_or_else(|| O2cError::Bug(format!("idempotency item has status {:?}", get_s(item, "status"))))?,
        payload_hash: get_s(item, "validation").unwrap_or_default().to_owned(),
        expires_at: Utc.timestamp_opt(get_n(item, "expiration").unwrap_or(0), 0).single().unwrap_or_default(),
        in_progress_until: get_n(item, "in_progress_expiration").map(from_ms),
        result,
    })
}

impl DynamoStore {
    pub(super) fn completion_put(&self, comp: &Completion) -> Result<Put, O2cError> {
        let data = to_json(&comp.result).map_err(|e| O2cError::Bug(e.to_string()))?;
        let record = HashMap::from([
            ("id".to_owned(), s(comp.key.clone())),
            ("status".to_owned(), s(COMPLETED)),
            ("validation".to_owned(), s(comp.payload_hash.clone())),
            ("expiration".to_owned(), n(comp.expires_at.timestamp())),
            ("data".to_owned(), s(data)),
        ]);
        let idem = Put::builder()
            .table_name(&self.tables.idempotency)
            .set_item(Some(record))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match comp.mode {
            CompletionMode::Fresh => idem
                .condition_expression(KEY_IS_FREE)
                .set_expression_attribute_names(Some(key_is_free_names()))
                .set_expression_attribute_values(Some(key_is_free_values(comp.now))),
            CompletionMode::Reserved => idem
                .condition_expression("#st = :ip AND #val = :h")
                .expression_attribute_names("#st", "status")
                .expression_attribute_names("#val", "validation")
                .expression_attribute_values(":ip", s(IN_PROGRESS))
                .expression_attribute_values(":h", s(comp.payload_hash.clone())),
        }
        .build()
        .map_err(|e| O2cError::Bug(e.to_string()))
    }
    /// Consistent read of an idempotency record.
    pub(super) async fn get_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, O2cError> {
        self.counts.read();
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.idempotency)
            .key("id", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(dep)?;
        out.item().map(record_from_item).transpose()
    }

    fn classify(rec: IdempotencyRecord, hash: &str, now: DateTime<Utc>) -> ReserveOutcome {
        match rec.classify(hash, now) {
            // Expired between our condition and this read: someone else may be taking it.
            KeyState::Free => ReserveOutcome::InProgress { until: None },
            KeyState::InProgress { until } => ReserveOutcome::InProgress { until },
            KeyState::Mismatch { stored } => ReserveOutcome::PayloadMismatch { stored },
            KeyState::Completed(rec) => ReserveOutcome::AlreadyCompleted(rec),
        }
    }
}

impl IdempotencyStore for DynamoStore {
    async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, O2cError> {
        self.get_record(key).await
    }

    async fn reserve(&self, r: Reservation) -> Result<ReserveOutcome, O2cError> {
        o2c_app::ports::each_written_once(&r.others)?;
        let record = HashMap::from([
            ("id".to_owned(), s(r.key.clone())),
            ("status".to_owned(), s(IN_PROGRESS)),
            ("validation".to_owned(), s(r.payload_hash.clone())),
            ("expiration".to_owned(), n(r.expires_at.timestamp())),
            ("in_progress_expiration".to_owned(), n(ms(r.in_progress_until))),
        ]);
        match (&r.claim, r.others.is_empty()) {
            (None, true) => {
                let req = self
                    .client
                    .put_item()
                    .table_name(&self.tables.idempotency)
                    .set_item(Some(record))
                    .condition_expression(KEY_IS_FREE)
                    .set_expression_attribute_names(Some(key_is_free_names()))
                    .set_expression_attribute_values(Some(key_is_free_values(r.now)))
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
                self.counts.write();
                match req.send().await {
                    Ok(_) => Ok(ReserveOutcome::Reserved { claimed_version: None }),
                    Err(err) => match err.into_service_error() {
                        PutItemError::ConditionalCheckFailedException(e) => {
                            let rec = match e.item() {
                                Some(item) if !item.is_empty() => Some(record_from_item(item)?),
                                _ => self.get_record(&r.key).await?,
                            };
                            Ok(rec.map_or(ReserveOutcome::InProgress { until: None }, |rec| Self::classify(rec, &r.payload_hash, r.now)))
                        }
                        other => Err(O2cError::dependency("dynamodb", format!("{other:?}"))),
                    },
                }
            }
            (claim, _) => {
                // Reserve + claim in one transaction: the engagement (and whatever else the
                // plan claims, e.g. an invoice number) is written by the same request that
                // owns the key (one write request; ≤ 100 items per transaction).
                let put = Put::builder()
                    .table_name(&self.tables.idempotency)
                    .set_item(Some(record))
                    .condition_expression(KEY_IS_FREE)
                    .set_expression_attribute_names(Some(key_is_free_names()))
                    .set_expression_attribute_values(Some(key_is_free_values(r.now)))
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                    .build()
                    .map_err(|e| O2cError::Bug(e.to_string()))?;
                let mut items = vec![TransactWriteItem::builder().put(put).build()];
                if let Some(c) = claim {
                    items.push(TransactWriteItem::builder().put(self.state_put(c)?).build());
                }
                for w in &r.others {
                    items.push(TransactWriteItem::builder().put(self.aggregate_put(w)?.0).build());
                }
                self.counts.write();
                let res = self.client.transact_write_items().set_transact_items(Some(items)).send().await;
                match res {
                    Ok(_) => Ok(ReserveOutcome::Reserved { claimed_version: claim.as_ref().map(|c| c.expected.next()) }),
                    Err(err) => match err.into_service_error() {
                        TransactWriteItemsError::TransactionCanceledException(e) => {
                            let reasons = e.cancellation_reasons();
                            if reasons.first().and_then(|x| x.code()) == Some("ConditionalCheckFailed") {
                                let rec = match reasons[0].item() {
                                    Some(item) if !item.is_empty() => Some(record_from_item(item)?),
                                    _ => self.get_record(&r.key).await?,
                                };
                                return Ok(rec.map_or(ReserveOutcome::InProgress { until: None }, |rec| {
                                    Self::classify(rec, &r.payload_hash, r.now)
                                }));
                            }
                            // Only the claim's own condition failing is a version race;
                            // throttling or a conflicting transaction is a retryable dependency.
                            if reasons.iter().skip(1).any(|x| x.code() == Some("ConditionalCheckFailed")) {
                                return Ok(ReserveOutcome::StateConflict);
                            }
                            let codes: Vec<&str> = reasons.iter().map(|x| x.code().unwrap_or("None")).collect();
                            Err(O2cError::dependency("dynamodb", format!("reserve-with-claim cancelled: {codes:?}")))
                        }
                        other => Err(O2cError::dependency("dynamodb", format!("{other:?}"))),
                    },
                }
            }
        }
    }

    async fn release(&self, key: &str) -> Result<(), O2cError> {
        self.counts.write();
        let res = self
            .client
            .delete_item()
            .table_name(&self.tables.idempotency)
            .key("id", s(key))
            .condition_expression("#st = :ip")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":ip", s(IN_PROGRESS))
            .send()
            .await;
        // Refused by the condition: nothing of ours to release.
        written(res).map(|_| ())
    }
}
