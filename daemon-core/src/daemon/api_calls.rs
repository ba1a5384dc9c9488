//! The lifecycle API calls on a daemon (instances are `instances`), each mapping the
//! client's error to a [`DaemonError`] naming the daemon.

use super::{Daemon, DaemonError};
use crate::api::{ClientError, MountRequest, NydusdClient};

impl Daemon {
    pub(super) async fn api<T>(
        &self,
        call: impl AsyncFnOnce(NydusdClient) -> Result<T, ClientError>,
    ) -> Result<T, DaemonError> {
        let client = self.client().await?;
        call(client).await.map_err(|source| DaemonError::Client { id: self.id(), source: Box::new(source) })
    }

    /// `PUT /api/v1/daemon/start`.
    pub async fn start(&self) -> Result<(), DaemonError> {
        self.api(async |c| c.start().await).await
    }

    /// `PUT /api/v1/daemon/exit`.
    pub async fn exit(&self) -> Result<(), DaemonError> {
        self.api(async |c| c.exit().await).await
    }

    /// `PUT /api/v1/daemon/fuse/takeover`.
    pub async fn takeover(&self) -> Result<(), DaemonError> {
        self.api(async |c| c.takeover().await).await
    }

    /// `PUT /api/v1/daemon/fuse/sendfd`.
    pub async fn send_fd(&self) -> Result<(), DaemonError> {
        self.api(async |c| c.send_fd().await).await
    }

    /// `POST /api/v1/mount` at the in-FUSE path `mountpoint`.
    pub async fn mount(&self, mountpoint: &str, request: &MountRequest) -> Result<(), DaemonError> {
        self.api(async |c| c.mount(mountpoint, request).await).await
    }

    /// `DELETE /api/v1/mount` at the in-FUSE path `mountpoint`.
    pub async fn umount(&self, mountpoint: &str) -> Result<(), DaemonError> {
        self.api(async |c| c.umount(mountpoint).await).await
    }
}
