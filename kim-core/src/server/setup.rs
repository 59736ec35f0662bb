//! What the process that serves does before it listens: connect to its cluster, run the app's
//! own preparations. Kept as futures until then, so that a worker process, which never
//! serves, never runs them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::cluster::Cluster;
use crate::error::ServerError;

/// An error from the app's setup.
type SetupError = Box<dyn std::error::Error + Send + Sync>;

/// A setup step, not yet started.
type Step<T> = Pin<Box<dyn Future<Output = Result<T, SetupError>> + Send>>;

/// Where a server's cluster comes from.
enum ClusterSource {
    /// Connected already.
    Ready(Arc<dyn Cluster>),
    /// Connected when the server starts serving.
    Connect(Step<Arc<dyn Cluster>>),
}

/// The setup of a server that has not started.
#[derive(Default)]
pub(crate) struct Setup {
    cluster: Option<ClusterSource>,
    tasks: Vec<Step<()>>,
}

impl Setup {
    /// The server is a node of `cluster`.
    pub(crate) fn cluster_ready(&mut self, cluster: Arc<dyn Cluster>) {
        self.cluster = Some(ClusterSource::Ready(cluster));
    }

    /// The server is a node of the cluster `connect` gives.
    pub(crate) fn cluster_connect<C, E>(
        &mut self,
        connect: impl Future<Output = Result<C, E>> + Send + 'static,
    ) where
        C: Cluster,
        E: Into<SetupError>,
    {
        let step = async move {
            match connect.await {
                Ok(c) => Ok(Arc::new(c) as Arc<dyn Cluster>),
                Err(e) => Err(e.into()),
            }
        };
        self.cluster = Some(ClusterSource::Connect(Box::pin(step)));
    }

    /// `task` runs before the server listens.
    pub(crate) fn task<E>(&mut self, task: impl Future<Output = Result<(), E>> + Send + 'static)
    where
        E: Into<SetupError>,
    {
        self.tasks
            .push(Box::pin(async move { task.await.map_err(Into::into) }));
    }

    /// Runs the app's tasks in the order they were given, then connects the cluster; returns
    /// the cluster, if there is one.
    pub(crate) async fn run(self) -> Result<Option<Arc<dyn Cluster>>, ServerError> {
        for task in self.tasks {
            task.await.map_err(ServerError::Setup)?;
        }
        match self.cluster {
            None => Ok(None),
            Some(ClusterSource::Ready(c)) => Ok(Some(c)),
            Some(ClusterSource::Connect(connect)) => {
                connect.await.map(Some).map_err(ServerError::Setup)
            }
        }
    }
}
