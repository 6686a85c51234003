//! Mapping files published to the stage (`PK = MAPPINGS`, `SK = <vendor>/<object>`): the
//! ingestion function takes them over its compiled-in set without a rebuild. One item per
//! file, its YAML text as written (a mapping file is a few KB, far under DynamoDB's 400 KB
//! item limit).

use super::*;

/// The partition the published mappings share.
const PK: &str = "MAPPINGS";

/// DynamoDB's limit of items in one `TransactWriteItems`.
const MAX_TRANSACT_ITEMS: usize = 100;

impl DynamoStore {
    /// Publishes mapping files (`(name, yaml)`), each replacing the stage's version of that
    /// name; `by` and `at` are recorded with it. The caller checked that they load. All or
    /// nothing in one transaction (`TransactWriteItems` takes at most 100 items: more files
    /// are refused rather than published in parts).
    pub async fn put_mappings(&self, files: &[(String, String)], by: &str, at: chrono::DateTime<chrono::Utc>) -> Result<usize, O2cError> {
        if files.len() > MAX_TRANSACT_ITEMS {
            return Err(O2cError::Validation(vec![o2c_domain::events::Issue::new(
                "files",
                "too_many",
                format!(
                    "{} mapping files: one publication takes at most {MAX_TRANSACT_ITEMS} (publish them with --mapping in groups)",
                    files.len()
                ),
            )]));
        }
        let mut puts = Vec::with_capacity(files.len());
        for (name, text) in files {
            let item = HashMap::from([
                ("PK".to_owned(), s(PK)),
                ("SK".to_owned(), s(name.clone())),
                ("text".to_owned(), s(text.clone())),
                ("published_by".to_owned(), s(by)),
                ("published_at".to_owned(), s(at.to_rfc3339())),
            ]);
            let put =
                Put::builder().table_name(&self.tables.state).set_item(Some(item)).build().map_err(|e| O2cError::Bug(e.to_string()))?;
            puts.push(TransactWriteItem::builder().put(put).build());
        }
        if puts.is_empty() {
            return Ok(0);
        }
        self.counts.write();
        self.client.transact_write_items().set_transact_items(Some(puts)).send().await.map_err(dep)?;
        Ok(files.len())
    }

    /// The mapping files published to the stage, `(name, yaml)` by name.
    pub async fn mapping_files(&self) -> Result<Vec<(String, String)>, O2cError> {
        let items = self.query_all(PK, None).await?;
        Ok(items.iter().filter_map(|i| Some((get_s(i, "SK")?.to_owned(), get_s(i, "text")?.to_owned()))).collect())
    }
}
