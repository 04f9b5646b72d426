using System.Diagnostics;
using System.Runtime.InteropServices;
using Hypervisor.Passthrough.Interop;

namespace Hypervisor.Passthrough.Tests.Interop;

/// <summary>Compares the interop structs with the C library's layouts, as compiled by gcc on this machine.</summary>
public sealed class StatLayoutTests
{
    private const string Program = """
        #define _GNU_SOURCE
        #include <stdio.h>
        #include <stddef.h>
        #include <fcntl.h>
        #include <sys/stat.h>
        #include <sys/statvfs.h>
        #define F(s, m) printf(#s "." #m " %zu\n", offsetof(struct s, m));
        int main(void) {
          printf("stat %zu\n", sizeof(struct stat));
          F(stat, st_dev) F(stat, st_ino) F(stat, st_nlink) F(stat, st_mode) F(stat, st_uid) F(stat, st_gid)
          F(stat, st_rdev) F(stat, st_size) F(stat, st_blksize) F(stat, st_blocks) F(stat, st_atim) F(stat, st_mtim) F(stat, st_ctim)
          printf("statvfs %zu\n", sizeof(struct statvfs));
          F(statvfs, f_bsize) F(statvfs, f_frsize) F(statvfs, f_blocks) F(statvfs, f_bfree) F(statvfs, f_bavail)
          F(statvfs, f_files) F(statvfs, f_ffree) F(statvfs, f_favail) F(statvfs, f_fsid) F(statvfs, f_flag) F(statvfs, f_namemax)
          printf("flock %zu\n", sizeof(struct flock));
          F(flock, l_type) F(flock, l_whence) F(flock, l_start) F(flock, l_len) F(flock, l_pid)
          return 0;
        }
        """;

    [Fact]
    public void Layouts_MatchGcc()
    {
        var dir = Directory.CreateTempSubdirectory("pt-layout-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, "l.c"), Program);
            Run("gcc", $"-o {dir}/l {dir}/l.c");
            var c = Run($"{dir}/l", "").Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(l => l.Split(' ')).ToDictionary(p => p[0], p => int.Parse(p[1]));

            Assert.Equal(c["stat"], Marshal.SizeOf<Stat>());
            Check<Stat>(c, "stat", ("st_dev", "Dev"), ("st_ino", "Ino"), ("st_nlink", "Nlink"), ("st_mode", "Mode"),
                ("st_uid", "Uid"), ("st_gid", "Gid"), ("st_rdev", "Rdev"), ("st_size", "Size"), ("st_blksize", "Blksize"),
                ("st_blocks", "Blocks"), ("st_atim", "Atime"), ("st_mtim", "Mtime"), ("st_ctim", "Ctime"));
            Assert.Equal(c["statvfs"], Marshal.SizeOf<StatVfs>());
            Check<StatVfs>(c, "statvfs", ("f_bsize", "Bsize"), ("f_frsize", "Frsize"), ("f_blocks", "Blocks"), ("f_bfree", "Bfree"),
                ("f_bavail", "Bavail"), ("f_files", "Files"), ("f_ffree", "Ffree"), ("f_favail", "Favail"), ("f_fsid", "Fsid"),
                ("f_flag", "Flag"), ("f_namemax", "Namemax"));
            Assert.Equal(c["flock"], Marshal.SizeOf<Flock>());
            Check<Flock>(c, "flock", ("l_type", "Type"), ("l_whence", "Whence"), ("l_start", "Start"), ("l_len", "Len"), ("l_pid", "Pid"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void Check<T>(Dictionary<string, int> c, string cName, params (string C, string Field)[] fields)
    {
        foreach (var (cField, field) in fields)
            Assert.True(c[$"{cName}.{cField}"] == (int)Marshal.OffsetOf<T>(field), $"{cName}.{cField}: gcc {c[$"{cName}.{cField}"]}, C# {Marshal.OffsetOf<T>(field)}");
    }

    private static string Run(string file, string args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var output = p.StandardOutput.ReadToEnd();
        var error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{file} failed: {error}");
        return output;
    }
}
