using Hypervisor.Passthrough.Engine;
using Hypervisor.Passthrough.FileSystem;
using Hypervisor.Passthrough.Share;
using Microsoft.Extensions.Logging;

namespace Hypervisor.Passthrough;

/// <summary>Creates the filesystem a share serves.</summary>
internal static class FileSystemFactory
{
    /// <summary>The passthrough filesystem over the share's directory, which is at <paramref name="root"/> now; throws
    /// IOException / UnauthorizedAccessException / ArgumentException with a one-sentence reason when the directory
    /// cannot be served.</summary>
    public static IFileSystem Create(LiveSettings settings, ILogger logger, string root) => new PassthroughFileSystem(settings, logger, root);
}
