//! The operators' audit log on the stage (`PK = OPLOG`, `SK = <time>#<uuid v5 of the action>`): what each
//! did through the console of `o2c serve --target aws`, as their AWS identity. One small
//! item per action (an action is at most a few KB, far under DynamoDB's 400 KB item limit);
//! one partition, as human actions come at human rates (well under a partition's 1,000
//! writes per second). Function roles are denied writes to it (`infra/template.yaml`).

use super::*;
use o2c_app::ports::{OperatorAction, OperatorLog};

/// The partition the log shares.
const PK: &str = "OPLOG";

impl OperatorLog for DynamoStore {
    async fn record_action(&self, action: &OperatorAction) -> Result<(), O2cError> {
        let body = to_json(action).map_err(|e| O2cError::Bug(e.to_string()))?;
        // Sortable by time (fixed-width UTC); the suffix is derived from the whole action
        // (ids come from the IdGenerator port only): two records differ unless they are the
        // same action at the same nanosecond, which one record stands for anyway.
        let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, body.as_bytes());
        let sk = format!("{}#{digest}", action.at.format("%Y-%m-%dT%H:%M:%S%.9fZ"));
        let item = HashMap::from([
            ("PK".to_owned(), s(PK)),
            ("SK".to_owned(), s(sk)),
            ("actor".to_owned(), s(action.actor.clone())),
            ("body".to_owned(), s(body)),
        ]);
        self.counts.write();
        self.client.put_item().table_name(&self.tables.state).set_item(Some(item)).send().await.map_err(dep)?;
        Ok(())
    }

    async fn operator_actions(&self, limit: usize) -> Result<Vec<OperatorAction>, O2cError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        // Newest first, page by page (a page is at most 1 MB), until `limit`.
        while out.len() < limit {
            self.counts.read();
            let page = self
                .client
                .query()
                .table_name(&self.tables.state)
                .consistent_read(true)
                .key_condition_expression("PK = :pk")
                .expression_attribute_values(":pk", s(PK))
                .scan_index_forward(false)
                .limit(i32::try_from(limit - out.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(dep)?;
            for i in page.items() {
                let body = get_s(i, "body").ok_or_else(|| O2cError::Bug("an operator log item without its body".into()))?;
                out.push(from_json(body).map_err(|e| O2cError::Bug(format!("an operator log item that does not read: {e}")))?);
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        Ok(out)
    }
}
