//! Room membership of one namespace: which sockets are in which room.
//!
//! Rooms hold the sockets themselves, so a broadcast walks one map per room and never looks a
//! socket up again. Empty rooms are dropped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::socket::{Socket, SocketId};

pub type Room = Arc<str>;

#[derive(Default)]
pub(super) struct Rooms {
    members: HashMap<Room, HashMap<SocketId, Arc<Socket>>>,
}

impl Rooms {
    pub(super) fn join(&mut self, room: Room, socket: &Arc<Socket>) -> bool {
        self.members.entry(room).or_default().insert(socket.id().clone(), socket.clone()).is_none()
    }

    pub(super) fn leave(&mut self, room: &str, socket: &SocketId) -> bool {
        let Some(members) = self.members.get_mut(room) else {
            return false;
        };
        let removed = members.remove(socket).is_some();
        if members.is_empty() {
            self.members.remove(room);
        }
        removed
    }

    pub(super) fn len(&self, room: &str) -> usize {
        self.members.get(room).map_or(0, HashMap::len)
    }

    /// Sockets in any of `rooms`, each once, minus those in any of `except` or equal to
    /// `except_socket`.
    pub(super) fn recipients(
        &self,
        rooms: &[Room],
        except: &[Room],
        except_socket: Option<&SocketId>,
    ) -> Vec<Arc<Socket>> {
        let excluded: HashSet<&SocketId> = except
            .iter()
            .filter_map(|room| self.members.get(room))
            .flat_map(|members| members.keys())
            .chain(except_socket)
            .collect();
        let mut seen: HashSet<&SocketId> = HashSet::new();
        let single_room = rooms.len() == 1;
        let mut out = Vec::new();
        for members in rooms.iter().filter_map(|room| self.members.get(room)) {
            for (id, socket) in members {
                // One room needs no de-duplication: a socket is in a room at most once.
                if excluded.contains(id) || (!single_room && !seen.insert(id)) {
                    continue;
                }
                out.push(socket.clone());
            }
        }
        out
    }
}
