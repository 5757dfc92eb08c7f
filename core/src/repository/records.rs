//! The records a repository keeps beside the points, each signed when this
//! host signs: restore tests, snapshot sets, drill reports, the handover
//! page. A record that cannot be read, or is not signed by the key trusted
//! for it, is skipped.

use super::{Repository, layout};
use crate::Result;
use crate::keys::sign::Owner;

/// One stored record (a snapshot set, a report) as read back: its key and
/// its bytes. The caller parses it and trusts only what its key says.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub bytes: Vec<u8>,
}

impl Record {
    /// The file name of the key (its last component).
    pub fn name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

impl Repository {
    /// Stores a host's handover page: its Markdown (signed, as records are)
    /// and its HTML rendering.
    pub async fn save_handover(&self, host: &str, md: Vec<u8>, html: String) -> Result<()> {
        let what = "cannot store the handover page";
        self.write(&layout::handover(host, "md"), md, what).await?;
        self.put_whole(&layout::handover(host, "html"), html.into_bytes())
            .await
            .map_err(|e| self.target.error(what, e))
    }

    /// Records a restore test of a point (its newest replaces the one before).
    pub async fn save_restore_test(&self, tested: &crate::records::Tested) -> Result<()> {
        let body = serde_json::to_vec_pretty(tested).expect("record serialises");
        self.write(
            &layout::restore_test(&tested.host, &tested.export, &tested.id),
            body,
            "cannot record the restore test",
        )
        .await
    }

    /// The restore tests of one export, newest last.
    pub async fn restore_tests(
        &self,
        host: &str,
        export: &str,
    ) -> Result<Vec<crate::records::Tested>> {
        let records = self
            .records(
                &layout::restore_tests_dir(host, export),
                Owner::Host(host),
                "cannot list restore tests",
            )
            .await?;
        let mut out: Vec<crate::records::Tested> = records
            .iter()
            .filter_map(|r| serde_json::from_slice(&r.bytes).ok())
            .filter(|t: &crate::records::Tested| t.host == host && t.export == export)
            .collect();
        out.sort_by_key(|t| t.at);
        Ok(out)
    }

    /// Records a snapshot set (JSON) under its host.
    pub async fn save_snapshot_set(&self, host: &str, id: &str, body: Vec<u8>) -> Result<()> {
        self.write(
            &layout::snapshot_set(host, id),
            body,
            "cannot record the snapshot set",
        )
        .await
    }

    /// Every snapshot-set record of `host`.
    pub async fn snapshot_set_records(&self, host: &str) -> Result<Vec<Record>> {
        self.records(
            &layout::snapshot_sets_dir(host),
            Owner::Host(host),
            "cannot list snapshot sets",
        )
        .await
    }

    pub async fn delete_snapshot_set(&self, host: &str, id: &str) -> Result<()> {
        let key = layout::snapshot_set(host, id);
        self.delete_object(&key).await?;
        let _ = self.target.op.delete(&layout::signature(&key)).await;
        Ok(())
    }

    /// Stores a run's report: its JSON record and its HTML page.
    pub async fn save_report(
        &self,
        runbook: &str,
        id: &str,
        json: Vec<u8>,
        html: String,
    ) -> Result<()> {
        let what = "cannot store the report";
        self.write(&layout::report(runbook, id, "json"), json, what)
            .await?;
        // The page is for people; the JSON record is what readers trust.
        self.target
            .op
            .write(&layout::report(runbook, id, "html"), html.into_bytes())
            .await
            .map(|_| ())
            .map_err(|e| self.target.error(what, e))
    }

    /// Stores a fence record (signed when this host signs). Records are
    /// never rewritten: the newest in force is read from the list.
    pub async fn save_fence(&self, fence: &crate::records::Fence) -> Result<()> {
        let body = serde_json::to_vec_pretty(fence).expect("record serialises");
        let key = layout::fence(&fence.host, &fence.id());
        self.write(&key, body, "cannot store the fence record")
            .await
    }

    /// Every fence record of `host`, signed by a trusted key when the
    /// policy trusts keys; a record naming another host is skipped.
    pub async fn fences(&self, host: &str) -> Result<Vec<crate::records::Fence>> {
        let found = self
            .records(
                &layout::fences_dir(host),
                Owner::Anyone,
                "cannot list fence records",
            )
            .await?;
        Ok(found
            .iter()
            .filter_map(|r| serde_json::from_slice::<crate::records::Fence>(&r.bytes).ok())
            .filter(|f| f.host == host)
            .collect())
    }

    /// Stores an incident record of the host's watchdog (signed when this
    /// host signs); a later state of the same incident replaces it.
    pub async fn save_incident(&self, incident: &crate::records::Incident) -> Result<()> {
        let body = serde_json::to_vec_pretty(incident).expect("record serialises");
        let key = layout::incident(&incident.host, &incident.id());
        self.write(&key, body, "cannot store the incident record")
            .await
    }

    /// Every incident record of `host`, oldest first, signed by the host's
    /// key when the policy trusts keys; a record naming another host is
    /// skipped.
    pub async fn incidents(&self, host: &str) -> Result<Vec<crate::records::Incident>> {
        let found = self
            .records(
                &layout::incidents_dir(host),
                Owner::Host(host),
                "cannot list incident records",
            )
            .await?;
        let mut out: Vec<crate::records::Incident> = found
            .iter()
            .filter_map(|r| serde_json::from_slice::<crate::records::Incident>(&r.bytes).ok())
            .filter(|i| i.host == host)
            .collect();
        out.sort_by_key(|i| i.first_failed);
        Ok(out)
    }

    /// Every report record (the JSON ones), of every runbook.
    pub async fn report_records(&self) -> Result<Vec<Record>> {
        let what = "cannot list reports";
        let runbooks = match self.target.op.list(layout::REPORTS_DIR).await {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.target.error(what, e)),
        };
        let mut out = Vec::new();
        for rb in runbooks
            .iter()
            .filter(|e| e.metadata().is_dir() && e.path() != layout::REPORTS_DIR)
        {
            out.extend(self.records(rb.path(), Owner::Anyone, what).await?);
        }
        Ok(out)
    }

    /// The JSON records in folder `dir` (none when it does not exist); a
    /// record that cannot be read is skipped.
    async fn records(&self, dir: &str, owner: Owner<'_>, what: &str) -> Result<Vec<Record>> {
        let entries = match self.target.op.list(dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.target.error(what, e)),
        };
        let mut out = Vec::new();
        for e in entries.iter().filter(|e| e.name().ends_with(".json")) {
            let Ok(buf) = self.target.op.read(e.path()).await else {
                continue;
            };
            let bytes = buf.to_vec();
            if let Err(why) = self.check_signature(owner, e.path(), &bytes).await {
                tracing::warn!(
                    "target `{}`: record {} refused: {why}",
                    self.target.name,
                    e.path()
                );
                continue;
            }
            out.push(Record {
                key: e.path().to_string(),
                bytes,
            });
        }
        Ok(out)
    }
}
