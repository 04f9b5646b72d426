using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("Hypervisor.Protocol.Tests")]
