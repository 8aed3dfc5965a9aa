//! Progress of a release operation, step by step, in the words of lir-svc's statuses
//! (`AddRelease: Downloading (12%)`), so operators who know those logs read ours the same way.

use std::fmt;

/// The steps of adding or removing a release, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Scaling the lir-data replicas up (k8s), when configured.
    Scaling,
    /// Downloading the squashfs (percent).
    Downloading,
    /// Checking the digest and the detached signature.
    Verifying,
    /// Unpacking the squashfs into the work dir.
    Unsquashing,
    /// Checking the unpacked layout against its manifest.
    CheckingLayout,
    /// Syncing files to the primary file store.
    SyncingFiles,
    /// Pushing images to the primary registry (percent).
    PushingImages,
    /// Replicating images and files to every replica.
    Replicating,
    /// Deleting the version's tags and manifests.
    DeletingImages,
    /// Removing the version's files.
    RemovingFiles,
    /// Running the registries' garbage collection.
    GarbageCollecting,
    /// Checking that the result is as wanted.
    Checking,
    /// Scaling the lir-data replicas back.
    ScalingBack,
    /// Removing the work dir.
    Cleaning,
    /// Done.
    Ready,
}

impl Step {
    /// The step's name as statuses show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Scaling => "Initializing replica pods",
            Step::Downloading => "Downloading",
            Step::Verifying => "Verifying",
            Step::Unsquashing => "Unsquashing",
            Step::CheckingLayout => "Checking layout",
            Step::SyncingFiles => "Syncing files",
            Step::PushingImages => "Pushing images",
            Step::Replicating => "Replicating",
            Step::DeletingImages => "Deleting images",
            Step::RemovingFiles => "Removing files",
            Step::GarbageCollecting => "Garbage collecting",
            Step::Checking => "Checking",
            Step::ScalingBack => "Scaling back",
            Step::Cleaning => "Cleaning up",
            Step::Ready => "Ready",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where progress goes: the task's status file, the terminal, the collector.
///
/// Implementations must be cheap: `percent` may be called for every chunk received, and it
/// is up to the implementation to throttle what it writes.
pub trait Progress: Send + Sync {
    /// A step begins.
    fn step(&self, step: Step, detail: &str);
    /// The current step is `percent` done (0..=100).
    fn percent(&self, step: Step, percent: u8, detail: &str);
    /// A line for the log (what was done, what was skipped).
    fn info(&self, message: &str);
    /// Bytes moved so far in the current step (downloading, pushing, replicating) and the
    /// total when known, for live displays (a terminal's progress bar). Called often; the
    /// default ignores it.
    fn bytes(&self, _step: Step, _done: u64, _total: Option<u64>) {}
    /// Items (images) done so far in the current step, of `total`. The default ignores it.
    fn items(&self, _step: Step, _done: u64, _total: u64) {}
}

/// Progress that goes nowhere (tests, checks).
pub struct NoProgress;

impl Progress for NoProgress {
    fn step(&self, _step: Step, _detail: &str) {}
    fn percent(&self, _step: Step, _percent: u8, _detail: &str) {}
    fn info(&self, _message: &str) {}
}

/// Percent of `done` over `total`, 0 when the total is unknown, at most 100.
pub fn percent_of(done: u64, total: u64) -> u8 {
    done.saturating_mul(100)
        .checked_div(total)
        .map_or(0, |p| p.min(100) as u8)
}
