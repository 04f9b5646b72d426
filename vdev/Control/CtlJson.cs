using System.Text.Json.Serialization;

namespace Hypervisor.Vdev.Control;

// The JSON shapes printed by `vdev ctl --json`. Field names are snake_case like the .proto
// fields they come from; cache policies and health states are lower/upper-case words, not numbers.

internal sealed record OptionsJson(bool DirectIo, string Cache, bool Readonly, bool Xattr, bool Writeback);

internal sealed record OpcodeJson(uint Opcode, string Name, ulong Requests, ulong Errors);

internal sealed record AllowlistJson(bool Enabled, IReadOnlyList<string> Entries);

internal sealed record StatusJson(
    string SharedDir,
    string Tag,
    OptionsJson Options,
    double UptimeSeconds,
    ulong OpenFileHandles,
    ulong KnownNodes,
    ulong BytesRead,
    ulong BytesWritten,
    AllowlistJson Allowlist,
    IReadOnlyList<OpcodeJson> Opcodes,
    IReadOnlyList<int> QueueCpus,
    System.Text.Json.JsonElement? Settings);

internal sealed record HealthJson(string Status);

internal sealed record ShutdownJson(bool ShutdownRequested);

internal sealed record ErrorJson(string Code, int CodeNumber, string Message);

internal sealed record ErrorEnvelopeJson(ErrorJson Error);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(StatusJson))]
[JsonSerializable(typeof(OptionsJson))]
[JsonSerializable(typeof(AllowlistJson))]
[JsonSerializable(typeof(HealthJson))]
[JsonSerializable(typeof(ShutdownJson))]
[JsonSerializable(typeof(ErrorEnvelopeJson))]
internal sealed partial class CtlJsonContext : JsonSerializerContext;
