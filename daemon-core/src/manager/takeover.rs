//! The takeover shared by failover and hot upgrade (`nydusd-api.md` §4.3): a new nydusd,
//! started with `--upgrade`, takes the state blob and the FUSE fd its supervisor holds
//! and reaches READY. Failover starts it at once; an upgrade first moves the records.

use std::sync::Arc;

use super::{Manager, ManagerError};
use crate::DaemonState;
use crate::crash_point;
use crate::daemon::{Daemon, DaemonError};
use crate::supervisor::Supervisor;

impl Manager {
    /// Starts `new` in upgrade mode and has it take the state and fd from `supervisor`,
    /// up to READY; returns its pid. A failover records the new pid at once (the old
    /// process is dead); an upgrade does not, the old daemon stays in charge until then.
    pub(super) async fn take_over_from_supervisor(
        &self,
        new: &Daemon,
        supervisor: &Arc<Supervisor>,
        handover: Handover,
    ) -> Result<u32, ManagerError> {
        let id = new.id();
        let supervisor_error = |source| DaemonError::Supervisor { id: id.clone(), source };
        let [offered, init, taken_over, ready] = handover.boundaries();
        let offer = supervisor.offer(new.timeouts().supervisor).await.map_err(supervisor_error)?;
        crash_point::reached(offered);
        let pid = match handover {
            Handover::Failover => self.spawn(new, true).await?,
            Handover::Upgrade => self.spawn_unrecorded(new, true).await?,
        };
        offer.allow(pid);
        new.wait_until_state(DaemonState::Init).await?;
        crash_point::reached(init);
        new.takeover().await?;
        crash_point::reached(taken_over);
        offer.finished().await.map_err(supervisor_error)?;
        new.wait_until_state(DaemonState::Ready).await?;
        crash_point::reached(ready);
        Ok(pid)
    }
}

/// Why a new daemon takes a supervisor's state over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Handover {
    /// The old daemon died.
    Failover,
    /// The old daemon hands over to a new build.
    Upgrade,
}

impl Handover {
    /// The crash-point names of the steps: offered, INIT, taken over, READY.
    fn boundaries(self) -> [&'static str; 4] {
        match self {
            Self::Failover => ["failover.offered", "failover.init", "failover.taken_over", "failover.ready"],
            Self::Upgrade => ["upgrade.offered", "upgrade.init", "upgrade.taken_over", "upgrade.ready"],
        }
    }
}
