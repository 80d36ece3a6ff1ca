//! Raft's network: every group's RPCs ride the node's one transport
//! connection per peer, tagged with the group id.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;

use super::transport::{Peers, TransportError};
use super::types::{PeerNode, PeerRequest, RaftTypes};

/// Makes clients of one group.
pub struct GroupNetwork {
    /// The node's peer connections.
    pub peers: Arc<Peers>,
    /// The group.
    pub group: u32,
}

/// One group's client of one peer.
pub struct GroupClient {
    peers: Arc<Peers>,
    group: u32,
    target: u64,
    addr: String,
}

impl RaftNetworkFactory<RaftTypes> for GroupNetwork {
    type Network = GroupClient;

    async fn new_client(&mut self, target: u64, node: &PeerNode) -> GroupClient {
        GroupClient {
            peers: self.peers.clone(),
            group: self.group,
            target,
            addr: node.cluster.clone(),
        }
    }
}

impl GroupClient {
    async fn call<T: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        req: &PeerRequest,
        ttl: Duration,
    ) -> Result<T, RPCError<u64, PeerNode, E>> {
        let bytes =
            bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = self
            .peers
            .call(&self.addr, &bytes, ttl)
            .await
            .map_err(|e| match e {
                TransportError::Unreachable { .. } | TransportError::Auth { .. } => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                other => RPCError::Network(NetworkError::new(&other)),
            })?;
        let result: Result<T, E> =
            bincode::deserialize(&answer).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<RaftTypes> for GroupClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<RaftTypes>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, PeerNode, RaftError<u64>>> {
        self.call(&PeerRequest::Append(self.group, rpc), option.hard_ttl())
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<RaftTypes>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, PeerNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.call(&PeerRequest::Snapshot(self.group, rpc), option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, PeerNode, RaftError<u64>>> {
        self.call(&PeerRequest::Vote(self.group, rpc), option.hard_ttl())
            .await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // An unreachable peer is retried often enough to notice its return
        // quickly, rarely enough not to spin.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
