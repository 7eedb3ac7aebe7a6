"""OCI runtime bundles: the config.json of containers and of a pod's infra process.

`specinput` holds the plain, protobuf-free description of what a container asks
for; `spec` turns it into the runtime-spec document runc and crun read; `users`
and `seccomp` resolve the two inputs that need files (the image's /etc/passwd and
/etc/group, and seccomp profiles).
"""
