using Hypervisor.Protocol.Share;
using Hypervisor.Vdev.Cli;

namespace Hypervisor.Vdev.Tests.Cli;

/// <summary>The vdev's single-share command line in virtiofsd's vocabulary, as libvirt and scripts write it.</summary>
public sealed class VdevCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("vdev-cli-").FullName;

    private static (VdevCommand.Request? Request, string Stderr, int Exit) Read(params string[] args)
    {
        var stderr = new StringWriter();
        var request = VdevCommand.Read(args, stderr, out var exit);
        return (request, stderr.ToString().Trim(), exit);
    }

    [Fact]
    public void VirtiofsdSpellings_EqualsSignsAndOItems_AreRead()
    {
        var (request, stderr, _) = Read("--socket-path=/tmp/x.sock", "--tag", "fs1", "--request-queues=2", "--queue-size", "256",
            "-o", $"source={_dir},cache=none,xattr", "-o", "log_level=warning", "--thread-pool-size=4", "--allow", "a//b/", "--queue-cpus", "none");
        Assert.True(request is not null, stderr);
        var share = Assert.Single(request.Shares).Settings;
        Assert.Equal("/tmp/x.sock", share.SocketPath);
        Assert.Equal("fs1", share.Tag);
        Assert.True(request.OfferTag);
        Assert.Equal(2u, share.RequestQueues);
        Assert.Equal(256u, share.QueueSize);
        Assert.Equal(_dir, share.SharedDir);
        Assert.Equal(CachePolicy.Never, share.Cache);
        Assert.True(share.Xattr);
        Assert.Equal(Verbosity.Warn, share.LogLevel);
        Assert.Equal(4u, share.ThreadPoolSize);
        Assert.Equal(["a/b"], share.Allow);
        Assert.Null(share.PinnedCpus());
        Assert.Equal("/tmp/x.sock.ctl", share.EffectiveControlSocket());
    }

    [Fact]
    public void WithoutATag_TheVmmsTagIsUsed_AndTheControlSocketIsNamedAfterTheSocket()
    {
        var (request, stderr, _) = Read("--socket-path", "/tmp/y.sock", "--shared-dir", _dir);
        Assert.True(request is not null, stderr);
        Assert.False(request.OfferTag);
        Assert.Equal(ShareVocabulary.DefaultTag, request.Shares[0].Settings.Tag);
    }

    [Fact]
    public void XattrmapPosixAclAndSecurityLabel_AreRead_InBothSpellings_WithoutWarnings()
    {
        var (request, stderr, _) = Read("--socket-path", "/tmp/y.sock", "--shared-dir", _dir, "--xattrmap", ":map::user.virtiofs.:", "--posix-acl", "--security-label");
        Assert.True(request is not null, stderr);
        var share = request.Shares[0].Settings;
        Assert.Equal(":map::user.virtiofs.:", share.Xattrmap);
        Assert.True(share.PosixAcl && share.SecurityLabel && share.Xattr);
        Assert.Empty(request.Warnings);

        (request, stderr, _) = Read("--socket-path", "/tmp/y.sock", "-o", $"source={_dir},xattrmap=/map/trusted./user.virtiofs./,posix_acl,security_label");
        Assert.True(request is not null, stderr);
        share = request.Shares[0].Settings;
        Assert.Equal("/map/trusted./user.virtiofs./", share.Xattrmap);
        Assert.True(share.PosixAcl && share.SecurityLabel && share.Xattr);
        Assert.Empty(request.Warnings);
    }

    [Fact]
    public void VirtiofsdOptionsWithoutMeaningHere_AreNamedInWarnings()
    {
        var (request, stderr, _) = Read("--socket-path", "/tmp/y.sock", "--shared-dir", _dir, "-o", "flock,no_posix_lock,max_idle_threads=4");
        Assert.True(request is not null, stderr);
        Assert.Equal(["-o flock has no effect here.", "-o no_posix_lock has no effect here.", "-o max_idle_threads=4 has no effect here."], request.Warnings);
    }

    [Fact]
    public void LibvirtWrapperOptions_AreRead()
    {
        // A libvirt <binary path> wrapper: "--inode-file-handles=mandatory --announce-submounts $@".
        var (request, stderr, _) = Read("--inode-file-handles=mandatory", "--announce-submounts", "--fd=3", "-o", $"source={_dir}");
        Assert.True(request is not null, stderr);
        var share = Assert.Single(request.Shares).Settings;
        Assert.Equal(InodeFileHandles.Mandatory, share.InodeFileHandles);
        Assert.True(share.AnnouncesSubmounts());
        Assert.Empty(request.Warnings);
        Assert.Equal(["--shared-dir", _dir, "--inode-file-handles", "mandatory"], ShareVocabulary.ToArguments(share));
    }

    [Fact]
    public void FileHandleSubmountAndFeatureOptions_AreRead_AndPassedOn()
    {
        var (request, stderr, _) = Read("--socket-path", "/tmp/y.sock", "--shared-dir", _dir, "--no-announce-submounts",
            "--inode-file-handles", "never", "--preserve-noatime", "--no-readdirplus", "--no-killpriv-v2", "--allow-mmap",
            "--socket-group", "kvm", "--foreground", "-f");
        Assert.True(request is not null, stderr);
        var share = Assert.Single(request.Shares).Settings;
        Assert.False(share.AnnouncesSubmounts());
        Assert.Equal(InodeFileHandles.Never, share.InodeFileHandles);
        Assert.True(share.PreserveNoatime);
        Assert.True(share.NoReaddirplus);
        Assert.False(share.HandlesKillprivV2());
        Assert.True(share.AllowMmap);
        Assert.Equal("kvm", share.SocketGroup);
        Assert.Empty(request.Warnings);
        // The daemon's arguments: the device's socket group stays with the vdev.
        Assert.Equal(["--shared-dir", _dir, "--no-announce-submounts", "--inode-file-handles", "never", "--preserve-noatime", "--no-readdirplus", "--no-killpriv-v2", "--allow-mmap"],
            ShareVocabulary.ToArguments(share));
    }

    [Fact]
    public void Defaults_AnnounceSubmounts_PreferHandles_AndOfferKillprivV2()
    {
        var (request, stderr, _) = Read("--socket-path", "/tmp/y.sock", "--shared-dir", _dir);
        Assert.True(request is not null, stderr);
        var share = request.Shares[0].Settings;
        Assert.True(share.AnnouncesSubmounts());
        Assert.Equal("prefer", ShareVocabulary.Name(share.InodeFileHandles));
        Assert.True(share.HandlesKillprivV2());
        Assert.False(share.NoReaddirplus);
        Assert.Equal(["--shared-dir", _dir], ShareVocabulary.ToArguments(share));
    }

    [Theory]
    [InlineData("announce_submounts", true, false, true)]
    [InlineData("no_readdirplus,no_killpriv_v2", false, true, false)]
    [InlineData("no_readdirplus,readdirplus,no_killpriv_v2,killpriv_v2", false, false, true)]
    public void OItems_SetSubmountsReaddirplusAndKillprivV2(string items, bool submounts, bool noReaddirplus, bool killpriv)
    {
        var (request, stderr, _) = Read("--socket-path", "/tmp/y.sock", "--shared-dir", _dir, "--no-announce-submounts", "-o", items);
        Assert.True(request is not null, stderr);
        var share = request.Shares[0].Settings;
        Assert.Equal(submounts, share.AnnouncesSubmounts());
        Assert.Equal(noReaddirplus, share.NoReaddirplus);
        Assert.Equal(killpriv, share.HandlesKillprivV2());
        Assert.Empty(request.Warnings);
    }

    [Theory]
    [InlineData(new[] { "--syslog" }, "vdev: --syslog is not supported: the vdev and its daemons log to stderr; run it under a service manager that passes stderr to the journal, or redirect it.")]
    [InlineData(new[] { "--migration-mode", "find-paths" }, "vdev: --migration-mode is not supported: this device does not migrate (it offers no device state to the VMM).")]
    [InlineData(new[] { "--migration-on-error=abort" }, "vdev: --migration-on-error is not supported: this device does not migrate (it offers no device state to the VMM).")]
    [InlineData(new[] { "--migration-verify-handles" }, "vdev: --migration-verify-handles is not supported: this device does not migrate (it offers no device state to the VMM).")]
    [InlineData(new[] { "--migration-confirm-paths" }, "vdev: --migration-confirm-paths is not supported: this device does not migrate (it offers no device state to the VMM).")]
    [InlineData(new[] { "-o", "timeout=5" }, "vdev: -o timeout=5 is not supported: entry and attribute timeouts follow --cache here (never 0 s, auto 1 s, metadata and always one day); use --cache.")]
    [InlineData(new[] { "-o", "dax" }, "vdev: -o dax is not supported: this device has no DAX window; remove it.")]
    [InlineData(new[] { "--inode-file-handles=sometimes" }, "vdev: --inode-file-handles 'sometimes' is not a file handle mode; use never, prefer or mandatory.")]
    public void OptionsWithoutMeaningHere_AreRefusedWithExit2(string[] extra, string expected)
    {
        var (request, stderr, exit) = Read(["--socket-path", "/s", "--shared-dir", "/x", .. extra]);
        Assert.Null(request);
        Assert.Equal(2, exit);
        Assert.Equal(expected, stderr);
    }

    [Fact]
    public async Task AnUnknownSocketGroup_Exits2_BeforeAnythingStarts()
    {
        var exit = await VdevCommand.RunAsync(["--socket-path", Path.Combine(_dir, "s.sock"), "--shared-dir", _dir, "--socket-group", "no-such-group-here"]);
        Assert.Equal(2, exit);
        Assert.False(File.Exists(Path.Combine(_dir, "s.sock")));
    }

    [Theory]
    [InlineData(new[] { "--shared-dir", "/x" }, "vdev: Give --socket-path PATH or --fd N so the VMM can connect.")]
    [InlineData(new[] { "--socket-path", "/s", "--fd", "3", "--shared-dir", "/x" }, "vdev: Give either --socket-path or --fd, not both.")]
    [InlineData(new[] { "--socket-path", "/s" }, "vdev: No shared directory; give --shared-dir DIR (or -o source=DIR), or --config FILE for several shares.")]
    [InlineData(new[] { "--socket-path", "/s", "--shared-dir", "/x", "--request-queues=0" }, "vdev: --request-queues '0' is not a whole number from 1 to 16.")]
    [InlineData(new[] { "--socket-path", "/s", "--shared-dir", "/x", "--queue-size=100" }, "vdev: --queue-size '100' is not a power of two from 1 to 32768; use e.g. 256 or 1024.")]
    [InlineData(new[] { "--socket-path", "/s", "--shared-dir", "/x", "--cache", "sometimes" }, "vdev: --cache 'sometimes' is not a cache policy; use never, metadata, auto or always.")]
    [InlineData(new[] { "--socket-path", "/s", "--shared-dir", "/x", "--log-level", "loud" }, "vdev: --log-level 'loud' is not a log level; use error, warn, info, debug, trace or off.")]
    [InlineData(new[] { "--socket-path", "/s", "--shared-dir", "/x", "-o", "bogus" }, "vdev: -o bogus is not a known option; use source=VALUE, cache=VALUE, allow_direct_io, no_allow_direct_io, xattr, no_xattr, readonly, no_readonly, writeback, no_writeback, log_level=VALUE, sandbox=VALUE, seccomp=VALUE, modcaps=VALUE, xattrmap=VALUE, posix_acl, no_posix_acl, security_label, no_security_label, announce_submounts, no_announce_submounts, readdirplus, no_readdirplus, killpriv_v2, no_killpriv_v2.")]
    [InlineData(new[] { "--socket-path", "/s", "--shared-dir", "/x", "--xattrmap", ":prefix:all:trusted.:user.vm." }, "vdev: --xattrmap ':prefix:all:trusted.:user.vm.' is not an xattr map: rule 1 is incomplete; write it as :type:scope:key:prepend:, ending with the separator.")]
    [InlineData(new[] { "--socket-path", "/s", "--shared-dir", "/x", "-o", "xattrmap=:ok:everywhere:::" }, "vdev: -o xattrmap=:ok:everywhere::: is not an xattr map: rule 1 has scope \"everywhere\"; use client, server or all.")]
    [InlineData(new[] { "--socket-path", "/s", "--shared-dir", "/x", "--tag", "0123456789012345678901234567890123456" }, "vdev: --tag '0123456789012345678901234567890123456' is 37 bytes long; a virtio-fs tag holds 1 to 36 bytes.")]
    [InlineData(new[] { "--socket-path", "/s", "--shared-dir", "/x", "--request-queues", "2", "--queue-cpus", "0" }, "vdev: --queue-cpus 0 lists 1 CPU for 2 request queues; give one CPU per request queue.")]
    [InlineData(new[] { "--config", "/c", "--shared-dir", "/x" }, "vdev: --config declares every share; do not combine it with --socket-path, --fd or share options.")]
    [InlineData(new[] { "--socket-path", "/s", "--shared-dir", "/x", "--translate-uid", "map:1000:2000" }, "vdev: --translate-uid 'map:1000:2000' has 2 numbers after 'map', which takes 3; use " + IdRule.Forms + ".")]
    [InlineData(new[] { "--socket-path", "/s", "--shared-dir", "/x", "--translate-gid", "squash-guest:0:100:10", "--translate-gid=guest:9:0:2" }, "vdev: --translate-gid 'guest:9:0:2' maps guest ids 9 to 9 that 'squash-guest:0:100:10' maps already; the guest ranges of two rules must not overlap.")]
    public void Mistakes_AreOneSentenceAndExit2(string[] args, string expected)
    {
        var (request, stderr, exit) = Read(args);
        Assert.Null(request);
        Assert.Equal(2, exit);
        Assert.Equal(expected, stderr);
    }

    [Fact]
    public void AnUnknownOption_IsRefusedWithExit2()
    {
        var (request, stderr, exit) = Read("--socket-path", "/s", "--shared-dir", _dir, "--no-such-option");
        Assert.Null(request);
        Assert.Equal(2, exit);
        Assert.Contains("--no-such-option", stderr);
        Assert.EndsWith("see vdev --help.", stderr);
    }

    [Fact]
    public void TranslationRules_AreReadInOrder_AndNoLongerWarnedAbout()
    {
        var (request, stderr, _) = Read("--socket-path", "/tmp/y.sock", "--shared-dir", _dir, "--translate-uid", "map:1000:2000:10",
            "--translate-uid=squash-guest:0:3000:1", "--translate-gid", "forbid-guest:5:2");
        Assert.True(request is not null, stderr);
        var share = request.Shares[0].Settings;
        Assert.Equal(["map:1000:2000:10", "squash-guest:0:3000:1"], share.TranslateUid);
        Assert.Equal(["forbid-guest:5:2"], share.TranslateGid);
        Assert.Empty(request.Warnings);
    }

    [Fact]
    public void TranslationRulesInAConfigurationFile_AreRepeatedKeys_AndABadOneExits2WithFileLineAndOneSentence()
    {
        var file = Path.Combine(_dir, "vm.conf");
        File.WriteAllText(file, $"vdev virtio-fs\n host_path {_dir}\n tag t\n socket /tmp/t.sock\n translate_uid map:1000:2000:10\n"
            + " translate_uid squash-host:0:65534:1000\n translate_gid forbid-guest:0:1\n");
        var (request, stderr, _) = Read("--config", file);
        Assert.True(request is not null, stderr);
        var share = request.Shares[0].Settings;
        Assert.Equal(["map:1000:2000:10", "squash-host:0:65534:1000"], share.TranslateUid);
        Assert.Equal(["forbid-guest:0:1"], share.TranslateGid);

        File.AppendAllText(file, " translate_uid squash-host:1999:0:2\n");
        (request, stderr, var exit) = Read("--config", file);
        Assert.Null(request);
        Assert.Equal(2, exit);
        Assert.Equal($"vdev: {file}:8: translate_uid 'squash-host:1999:0:2' maps host ids 2000 to 2000 that 'map:1000:2000:10' maps already; "
            + "the host ranges of two rules must not overlap.", stderr);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
