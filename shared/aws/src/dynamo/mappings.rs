//! Mapping files published to the stage (`PK = MAPPINGS`, `SK = <vendor>/<object>`): the
//! ingestion function takes them over its compiled-in set without a rebuild. One item per
//! file, its YAML text as written (a mapping file is a few KB, far under DynamoDB's 400 KB
//! item limit).

use super::*;

/// The partition the published mappings share.
const PK: &str = "MAPPINGS";

impl DynamoStore {
    /// Publishes mapping files (`(name, yaml)`), each replacing the stage's version of that
    /// name; `by` and `at` are recorded with it. The caller checked that they load.
    pub async fn put_mappings(&self, files: &[(String, String)], by: &str, at: chrono::DateTime<chrono::Utc>) -> Result<usize, O2cError> {
        for (name, text) in files {
            self.counts.write();
            self.client
                .put_item()
                .table_name(&self.tables.state)
                .item("PK", s(PK))
                .item("SK", s(name.clone()))
                .item("text", s(text.clone()))
                .item("published_by", s(by))
                .item("published_at", s(at.to_rfc3339()))
                .send()
                .await
                .map_err(dep)?;
        }
        Ok(files.len())
    }

    /// The mapping files published to the stage, `(name, yaml)` by name.
    pub async fn mapping_files(&self) -> Result<Vec<(String, String)>, O2cError> {
        let items = self.query_all(PK, None).await?;
        Ok(items.iter().filter_map(|i| Some((get_s(i, "SK")?.to_owned(), get_s(i, "text")?.to_owned()))).collect())
    }
}
