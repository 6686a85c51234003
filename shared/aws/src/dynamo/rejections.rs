//! The rejection port: parked messages and delivery failures.

use super::*;

impl RejectionStore for DynamoStore {
    async fn park(&self, m: &RejectedMessage) -> Result<(), O2cError> {
        let pk = format!("REJ#{}", m.rejection_id);
        let mut item = to_item(m)?;
        item.insert("PK".into(), s(pk.clone()));
        item.insert("SK".into(), s("REJECTION"));
        item.insert("GSI1PK".into(), s(format!("REJECTIONS#{}", m.rejected_at.format("%Y-%m-%d"))));
        item.insert("GSI1SK".into(), s(format!("{}#{}", m.rejected_at.to_rfc3339(), m.rejection_id)));
        self.counts.write();
        let res = self
            .client
            .put_item()
            .table_name(&self.tables.state)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        if written(res)? {
            return Ok(());
        }
        // The same body again: count the delivery unless this message id is recorded.
        let Some(message_id) = m.message_ids.first() else { return Ok(()) };
        let reasons = serde_dynamo::to_attribute_value(&m.reasons).map_err(|e| O2cError::Bug(e.to_string()))?;
        self.counts.write();
        let res = self
            .client
            .update_item()
            .table_name(&self.tables.state)
            .key("PK", s(pk))
            .key("SK", s("REJECTION"))
            .update_expression(
                "SET deliveries = deliveries + :one, message_ids = list_append(message_ids, :ids), last_rejected_at = :at, reasons = :r, error_type = :t",
            )
            .condition_expression("NOT contains(message_ids, :mid)")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":ids", AttributeValue::L(vec![s(message_id.clone())]))
            .expression_attribute_values(":mid", s(message_id.clone()))
            .expression_attribute_values(":at", s(m.rejected_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
            .expression_attribute_values(":r", reasons)
            .expression_attribute_values(":t", s(m.error_type.clone()))
            .send()
            .await;
        // Refused by the condition: this very message was parked already (a redelivery).
        written(res).map(|_| ())
    }

    async fn rejections(&self, limit: usize) -> Result<Vec<RejectedMessage>, O2cError> {
        let mut out = Vec::new();
        let today = o2c_app::ports::Clock::now(&o2c_app::ports::SystemClock).date_naive();
        // Day partitions, newest first, back 30 days.
        for back in 0..30 {
            if out.len() >= limit {
                break;
            }
            let day = today - chrono::Days::new(back);
            self.counts.read();
            let page = self
                .client
                .query()
                .table_name(&self.tables.state)
                .index_name("GSI1")
                .key_condition_expression("GSI1PK = :pk")
                .expression_attribute_values(":pk", s(format!("REJECTIONS#{}", day.format("%Y-%m-%d"))))
                .scan_index_forward(false)
                .send()
                .await
                .map_err(dep)?;
            for item in page.items() {
                // GSI1 projects keys only for rejections; read the item itself.
                let Some(pk) = get_s(item, "PK") else { continue };
                self.counts.read();
                let full = self
                    .client
                    .get_item()
                    .table_name(&self.tables.state)
                    .key("PK", s(pk))
                    .key("SK", s("REJECTION"))
                    .send()
                    .await
                    .map_err(dep)?;
                if let Some(it) = full.item().cloned() {
                    out.push(from_stored_item(it, &["PK", "SK", "GSI1PK", "GSI1SK"])?);
                }
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn record_failure(&self, f: &DeliveryFailure) -> Result<(), O2cError> {
        let mut item = to_item(f)?;
        item.insert("PK".into(), s(format!("MSG#{}", f.message_id)));
        item.insert("SK".into(), s("FAILURE"));
        item.insert("expires".into(), n(f.at.timestamp() + FAILURE_TTL_SECS));
        self.counts.write();
        self.client.put_item().table_name(&self.tables.state).set_item(Some(item)).send().await.map_err(dep)?;
        Ok(())
    }

    async fn failure(&self, message_id: &str) -> Result<Option<DeliveryFailure>, O2cError> {
        self.counts.read();
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.state)
            .key("PK", s(format!("MSG#{message_id}")))
            .key("SK", s("FAILURE"))
            .send()
            .await
            .map_err(dep)?;
        match out.item() {
            None => Ok(None),
            Some(item) => Ok(Some(from_stored_item(item.clone(), &["PK", "SK", "expires"])?)),
        }
    }
}
