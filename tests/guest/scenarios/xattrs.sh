# Extended attributes under an xattr map, and POSIX ACLs (XattrGuestTests), the same script against the vdev and
# QEMU's virtiofsd. Share 0 ($HV_TAG0) is served with the map
#   :prefix:all:trusted.:user.virtiofs.: :ok:all:user.:user.: :ok:all:security.capability:security.capability: :bad:all:::
# and holds the host-made file "pre" with user.virtiofs.trusted.pre=p, user.plain=u and trusted.host=h.
# Share 1 ($HV_TAG1) is served with POSIX ACLs; its root is 0755 on the host.
# Every observation is an "op" value; the host compares them with what it expects and reads what was stored.
X=/mnt/x; A=/mnt/a
hv_check mount.x hv_mount "$HV_TAG0" $X || exit 1
hv_check mount.a hv_mount "$HV_TAG1" $A || exit 1
op() { hv_val op "$1 $2"; }

# ---- the map: guest names to host names and back ----
echo f > $X/f
op set-trusted "$(hvtool xattr set $X/f trusted.t tv)"
op set-user "$(hvtool xattr set $X/f user.color blue)"
op set-unmapped "$(hvtool xattr set $X/f security.other x)"
op list-f "$(hvtool xattr list $X/f)"
op get-trusted "$(hvtool xattr get $X/f trusted.t)"
op get-user "$(hvtool xattr get $X/f user.color)"
op list-pre "$(hvtool xattr list $X/pre)"
op get-pre "$(hvtool xattr get $X/pre trusted.pre)"
op get-hidden "$(hvtool xattr get $X/pre trusted.host)"
op get-unmapped "$(hvtool xattr get $X/pre security.other)"
op remove-user "$(hvtool xattr remove $X/pre user.plain)"
op list-pre-after "$(hvtool xattr list $X/pre)"
echo g > $X/g
op set-g "$(hvtool xattr set $X/g trusted.kept k)"

# ---- POSIX ACLs: stored, inherited by new files (umask only where there is no default ACL), enforced ----
op runas "$(hvtool runexec 1001 1001 id -u 2>&1)"
op ls-share "$(hvtool runexec 1001 1001 ls -d $A 2>&1)"
mkdir $A/d $A/plain
chmod 0755 $A/d $A/plain
op setacl-d-access "$(hvtool setacl $A/d access u::7,u:1001:7,g::5,m::7,o::5)"
op setacl-d-default "$(hvtool setacl $A/d default u::7,u:1001:6,g::5,m::7,o::0)"
op getacl-d-default "$(hvtool getacl $A/d default)"
(umask 077; echo i > $A/d/inherited; mkdir $A/d/subdir; echo p > $A/plain/masked)
op mode-inherited "$(stat -c %a $A/d/inherited)"
op getacl-inherited "$(hvtool getacl $A/d/inherited access)"
op mode-subdir "$(stat -c %a $A/d/subdir)"
op getacl-subdir-default "$(hvtool getacl $A/d/subdir default)"
op mode-masked "$(stat -c %a $A/plain/masked)"
op getacl-masked "$(hvtool getacl $A/plain/masked access)"
# uid 1001 creates in d through its named entry; what it makes inherits d's default ACL, owned by 1001.
op user-create "$(hvtool runexec 1001 1001 sh -c "umask 022; echo u > $A/d/byuser && echo ok || echo fail" 2>&1)"
op mode-byuser "$(stat -c '%a %u' $A/d/byuser)"
# A file readable by uid 1001 through the ACL, not by 1002 (other has nothing).
echo secret > $A/d/secret
chmod 0600 $A/d/secret
op setacl-secret "$(hvtool setacl $A/d/secret access u::6,u:1001:4,g::0,m::4,o::0)"
op mode-secret "$(stat -c %a $A/d/secret)"
op read-1001 "$(hvtool runexec 1001 1001 cat $A/d/secret 2>/dev/null || echo denied)"
op read-1002 "$(hvtool runexec 1002 1002 cat $A/d/secret 2>/dev/null || echo denied)"
op write-1001 "$(hvtool runexec 1001 1001 sh -c "echo x >> $A/d/secret" 2>/dev/null && echo ok || echo denied)"
op remove-acl "$(hvtool xattr remove $A/d/secret system.posix_acl_access)"
hv_drop_caches
op read-1001-after-remove "$(hvtool runexec 1001 1001 cat $A/d/secret 2>/dev/null || echo denied)"
