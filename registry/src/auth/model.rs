//! The replicated auth state and the commands that change it (pure: applied through Raft by
//! every node alike).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The role that may do anything.
pub const ADMIN_ROLE: &str = "ROLE_ADMIN";
/// The first administrator's name (as in Nacos).
pub const ADMIN_USER: &str = "nacos";

/// One user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Bumped on every password change: tokens carry it (rule A3).
    pub generation: u64,
}

/// A permission of a role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Permission {
    /// The role holding it.
    pub role: String,
    /// Resource pattern, `namespace:group:naming/service`; `*` matches any run of characters.
    pub resource: String,
    /// `r`, `w` or `rw`.
    pub action: String,
}

/// Users, roles, permissions and the token key, as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuthState {
    /// Users by name.
    #[serde(default)]
    pub users: BTreeMap<String, User>,
    /// (role, user name) pairs.
    #[serde(default)]
    pub roles: BTreeSet<(String, String)>,
    /// Permissions.
    #[serde(default)]
    pub permissions: BTreeSet<Permission>,
    /// Hex of the token-signing key; generated once per cluster (rule A3).
    #[serde(default)]
    pub key: Option<String>,
    /// Generations of deleted users, so a user created again under the same name does not
    /// accept the old user's tokens.
    #[serde(default)]
    pub retired: BTreeMap<String, u64>,
}

/// A change to the auth state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    /// First start: sets the key if none, and creates the admin if there is no user at all.
    /// Fails (changing nothing) when both already exist, so that of several nodes racing to
    /// bootstrap exactly one learns its generated password was used.
    Bootstrap {
        /// Hex key, used only if none is set.
        key: String,
        /// The admin's password hash, used only if there is no user.
        admin_hash: String,
    },
    /// A new user.
    CreateUser {
        /// Name.
        username: String,
        /// Argon2id hash.
        password_hash: String,
    },
    /// Removes a user (not an admin) and its roles.
    DeleteUser {
        /// Name.
        username: String,
    },
    /// A new password (invalidates the user's tokens).
    SetPassword {
        /// Name.
        username: String,
        /// Argon2id hash.
        password_hash: String,
    },
    /// Gives a user a role.
    AddRole {
        /// Role.
        role: String,
        /// User.
        username: String,
    },
    /// Takes a role from one user, or from everyone.
    DeleteRole {
        /// Role.
        role: String,
        /// User, or every holder.
        username: Option<String>,
    },
    /// Grants a role a permission.
    AddPermission(Permission),
    /// Revokes a permission.
    DeletePermission(Permission),
}

/// Why a command changed nothing: a client's mistake, reported as 400.
pub type AuthResult = Result<(), String>;

impl AuthState {
    /// Applies `cmd` (deterministic).
    pub fn apply(&mut self, cmd: &AuthCommand) -> AuthResult {
        match cmd {
            AuthCommand::Bootstrap { key, admin_hash } => {
                let mut did = false;
                if self.key.is_none() {
                    self.key = Some(key.clone());
                    did = true;
                }
                if self.users.is_empty() {
                    self.users.insert(
                        ADMIN_USER.to_string(),
                        User {
                            password_hash: admin_hash.clone(),
                            generation: self.retired.get(ADMIN_USER).map_or(1, |g| g + 1),
                        },
                    );
                    self.roles
                        .insert((ADMIN_ROLE.to_string(), ADMIN_USER.to_string()));
                    return Ok(());
                }
                if did {
                    // The key was set, but the admin existed: not this node's password.
                    return Err("admin already exists".into());
                }
                Err("already bootstrapped".into())
            }
            AuthCommand::CreateUser {
                username,
                password_hash,
            } => {
                if self.users.contains_key(username) {
                    return Err(format!("user '{username}' already exist!"));
                }
                let generation = self.retired.get(username).map_or(1, |g| g + 1);
                self.users.insert(
                    username.clone(),
                    User {
                        password_hash: password_hash.clone(),
                        generation,
                    },
                );
                Ok(())
            }
            AuthCommand::DeleteUser { username } => {
                if self.is_admin(username) {
                    return Err(format!("cannot delete admin: {username}"));
                }
                let Some(u) = self.users.remove(username) else {
                    return Err(format!("user '{username}' not exist!"));
                };
                self.retired.insert(username.clone(), u.generation);
                self.roles.retain(|(_, user)| user != username);
                Ok(())
            }
            AuthCommand::SetPassword {
                username,
                password_hash,
            } => {
                let Some(u) = self.users.get_mut(username) else {
                    return Err(format!("user '{username}' not exist!"));
                };
                u.password_hash = password_hash.clone();
                u.generation += 1;
                Ok(())
            }
            AuthCommand::AddRole { role, username } => {
                if role == ADMIN_ROLE {
                    return Err("role 'ROLE_ADMIN' is not permitted to create!".into());
                }
                if !self.users.contains_key(username) {
                    return Err(format!("user '{username}' not found!"));
                }
                if !self.roles.insert((role.clone(), username.clone())) {
                    return Err(format!(
                        "user '{username}' already bound to the role '{role}'!"
                    ));
                }
                Ok(())
            }
            AuthCommand::DeleteRole { role, username } => {
                if role == ADMIN_ROLE {
                    return Err("role 'ROLE_ADMIN' cannot be deleted".into());
                }
                let before = self.roles.len();
                self.roles
                    .retain(|(r, u)| !(r == role && username.as_ref().is_none_or(|n| n == u)));
                if username.is_none() {
                    self.permissions.retain(|p| &p.role != role);
                }
                if self.roles.len() == before && username.is_some() {
                    return Err(format!("role '{role}' not bound to that user"));
                }
                Ok(())
            }
            AuthCommand::AddPermission(p) => {
                if !self.roles.iter().any(|(r, _)| r == &p.role) {
                    return Err(format!("role {} not found!", p.role));
                }
                self.permissions.insert(p.clone());
                Ok(())
            }
            AuthCommand::DeletePermission(p) => {
                if !self.permissions.remove(p) {
                    return Err("permission not found".into());
                }
                Ok(())
            }
        }
    }

    /// Whether `username` holds the admin role.
    pub fn is_admin(&self, username: &str) -> bool {
        self.roles
            .contains(&(ADMIN_ROLE.to_string(), username.to_string()))
    }

    /// Whether `username` may do `action` (`r` or `w`) on `resource` (rule A5).
    pub fn permits(&self, username: &str, resource: &str, action: char) -> bool {
        if self.is_admin(username) {
            return true;
        }
        self.roles
            .iter()
            .filter(|(_, u)| u == username)
            .any(|(role, _)| {
                self.permissions.iter().any(|p| {
                    &p.role == role && p.action.contains(action) && glob(&p.resource, resource)
                })
            })
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters and every other
/// character only itself (no regex: a resource name cannot smuggle a pattern in).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> AuthState {
        let mut s = AuthState::default();
        s.apply(&AuthCommand::Bootstrap {
            key: "k1".into(),
            admin_hash: "h".into(),
        })
        .unwrap();
        s
    }

    #[test]
    fn bootstrap_happens_once_and_the_racers_learn_it() {
        let mut s = boot();
        assert!(s.is_admin(ADMIN_USER));
        let again = AuthCommand::Bootstrap {
            key: "k2".into(),
            admin_hash: "other".into(),
        };
        assert!(s.apply(&again).is_err());
        assert_eq!(s.key.as_deref(), Some("k1"));
        assert_eq!(s.users[ADMIN_USER].password_hash, "h");
    }

    #[test]
    fn a5_permissions_match_by_pattern_and_action_and_admin_passes() {
        let mut s = boot();
        for c in [
            AuthCommand::CreateUser {
                username: "bob".into(),
                password_hash: "x".into(),
            },
            AuthCommand::AddRole {
                role: "dev".into(),
                username: "bob".into(),
            },
            AuthCommand::AddPermission(Permission {
                role: "dev".into(),
                resource: "ns1:*:*".into(),
                action: "r".into(),
            }),
        ] {
            s.apply(&c).unwrap();
        }
        assert!(s.permits("bob", "ns1:DEFAULT_GROUP:naming/orders", 'r'));
        assert!(!s.permits("bob", "ns1:DEFAULT_GROUP:naming/orders", 'w'));
        assert!(!s.permits("bob", "public:DEFAULT_GROUP:naming/orders", 'r'));
        assert!(!s.permits("bob", "ns10:DEFAULT_GROUP:naming/orders", 'r'));
        assert!(s.permits(ADMIN_USER, "anything", 'w'));
        assert!(!s.permits("nobody", "ns1:g:naming/s", 'r'));
        // Admin-only rules in the model: no second admin, no deleting the admin.
        assert!(s
            .apply(&AuthCommand::AddRole {
                role: ADMIN_ROLE.into(),
                username: "bob".into()
            })
            .is_err());
        assert!(s
            .apply(&AuthCommand::DeleteUser {
                username: ADMIN_USER.into()
            })
            .is_err());
    }

    #[test]
    fn a3_password_changes_and_deletions_move_the_generation_on() {
        let mut s = boot();
        let create = AuthCommand::CreateUser {
            username: "bob".into(),
            password_hash: "x".into(),
        };
        s.apply(&create).unwrap();
        assert_eq!(s.users["bob"].generation, 1);
        s.apply(&AuthCommand::SetPassword {
            username: "bob".into(),
            password_hash: "y".into(),
        })
        .unwrap();
        assert_eq!(s.users["bob"].generation, 2);
        s.apply(&AuthCommand::DeleteUser {
            username: "bob".into(),
        })
        .unwrap();
        s.apply(&create).unwrap();
        assert_eq!(s.users["bob"].generation, 3, "a new bob is not the old bob");
    }

    #[test]
    fn glob_is_literal_apart_from_stars() {
        assert!(glob("*", ""));
        assert!(glob("a*c", "abbbc"));
        assert!(glob("ns:*:naming/*", "ns:g:naming/s"));
        assert!(!glob("ns:*:naming/*", "ns2:g:naming/s"));
        assert!(!glob("a.c", "abc"), "a dot is a dot");
        assert!(!glob("ab", "abc"));
        assert!(glob("**", "x"));
    }
}
