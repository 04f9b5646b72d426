using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Xml.Linq;

namespace Hypervisor.Protocol.Tests;

/// <summary>
/// The layers point one way: protocol depends on no other part; vdev, fuse_launcher and passthrough depend on
/// protocol and on none of each other (they talk through processes, the ring and gRPC). Checked in both the
/// project files and the built assemblies' references.
/// </summary>
public class DependencyArrowTests
{
    private static readonly string Root = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", ".."));
    private static readonly string Configuration = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd('/')).Parent!.Name;

    /// <summary>Each part: its project, its built assembly, and the parts' assemblies it may reference.</summary>
    public static TheoryData<string, string, string[]> Parts => new()
    {
        { "protocol/Protocol.csproj", "protocol/bin/{0}/net10.0/Hypervisor.Protocol.dll", [] },
        { "vdev/Vdev.csproj", "vdev/bin/{0}/net10.0/vdev.dll", ["Hypervisor.Protocol"] },
        { "launcher/Launcher.csproj", "launcher/bin/{0}/net10.0/fuse_launcher.dll", ["Hypervisor.Protocol"] },
        { "passthrough/Passthrough.csproj", "passthrough/bin/{0}/net10.0/passthrough.dll", ["Hypervisor.Protocol"] },
    };

    private static readonly string[] PartAssemblies = ["Hypervisor.Protocol", "vdev", "fuse_launcher", "passthrough"];

    [Theory]
    [MemberData(nameof(Parts))]
    public void APartReferencesOnlyTheLayersBelowIt(string project, string assembly, string[] allowed)
    {
        // Project references that bring code in (vdev's references for build order and staging bring none).
        var referenced = XDocument.Load(Path.Combine(Root, project)).Descendants("ProjectReference")
            .Where(r => !string.Equals((string?)r.Attribute("ReferenceOutputAssembly"), "false", StringComparison.OrdinalIgnoreCase))
            .Select(r => Path.GetFileNameWithoutExtension((string)r.Attribute("Include")!))
            .ToArray();
        Assert.Equal(allowed.Select(a => a == "Hypervisor.Protocol" ? "Protocol" : a), referenced);

        using var pe = new PEReader(File.OpenRead(Path.Combine(Root, string.Format(System.Globalization.CultureInfo.InvariantCulture, assembly, Configuration))));
        var metadata = pe.GetMetadataReader();
        var parts = metadata.AssemblyReferences.Select(h => metadata.GetString(metadata.GetAssemblyReference(h).Name))
            .Where(PartAssemblies.Contains).ToArray();
        Assert.Equal(allowed, parts);
    }
}
