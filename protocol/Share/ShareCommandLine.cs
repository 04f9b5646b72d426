using System.CommandLine;
using System.Diagnostics.CodeAnalysis;

namespace Hypervisor.Protocol.Share;

/// <summary>
/// The <see cref="ShareVocabulary"/> as System.CommandLine options, for one command: every
/// <see cref="OptionScope.Share"/> option (and the <see cref="OptionScope.Device"/> ones for the vdev) plus
/// virtiofsd's <c>-o</c>. Each process builds its own instance and adds its own options beside these.
/// </summary>
public sealed class ShareCommandLine
{
    private readonly List<(ShareOption Spec, Option Option, Option<bool>? Off)> _options = [];
    private readonly Option<string[]> _compat = new("-o")
    {
        Description = "virtiofsd's options, comma-separated: " + ShareVocabulary.CompatKeys + ".",
        Arity = ArgumentArity.ZeroOrMore,
        AllowMultipleArgumentsPerToken = false,
    };

    /// <summary>Builds the options; <paramref name="withDevice"/> adds the vhost-user device's (the vdev's command line).</summary>
    public ShareCommandLine(bool withDevice)
    {
        foreach (var spec in ShareVocabulary.Options)
        {
            if (spec.Scope == OptionScope.Device && !withDevice) continue;
            Option option = spec.IsFlag
                ? new Option<bool>(spec.Name) { Description = spec.Description }
                : spec.Repeatable
                    ? new Option<string[]>(spec.Name) { Description = spec.Description, Arity = ArgumentArity.OneOrMore, AllowMultipleArgumentsPerToken = false }
                    : new Option<string>(spec.Name) { Description = spec.Description };
            var off = spec.Negation is null ? null : new Option<bool>(spec.Negation) { Description = $"Turns {spec.Name} off." };
            _options.Add((spec, option, off));
        }
    }

    /// <summary>Adds every option to <paramref name="command"/>.</summary>
    public void AddTo(Command command)
    {
        foreach (var (_, option, off) in _options)
        {
            command.Options.Add(option);
            if (off is not null) command.Options.Add(off);
        }
        command.Options.Add(_compat);
    }

    /// <summary>Whether any of these options appears in <paramref name="parse"/>.</summary>
    public bool AnyGiven(ParseResult parse)
    {
        foreach (var (_, option, off) in _options)
        {
            if (Given(parse, option) || (off is not null && Given(parse, off))) return true;
        }
        return Given(parse, _compat);
    }

    /// <summary>Whether <paramref name="option"/> was written on the command line (not merely defaulted).</summary>
    public static bool Given(ParseResult parse, Option option) => parse.GetResult(option) is { Implicit: false };

    /// <summary>
    /// Reads every option given into <paramref name="settings"/>, then the <c>-o</c> items over them (as virtiofsd
    /// does). <c>-o</c> items that change nothing here are added to <paramref name="ignored"/>. On the first bad
    /// value, <paramref name="error"/> is one sentence naming the option and what to change.
    /// </summary>
    public bool TryRead(ParseResult parse, ShareSettings settings, ICollection<string> ignored, [NotNullWhen(false)] out string? error)
    {
        foreach (var (spec, option, off) in _options)
        {
            if (Given(parse, option))
            {
                IEnumerable<string> values = option switch
                {
                    Option<bool> flag => [parse.GetValue(flag) ? "true" : "false"],
                    Option<string[]> many => parse.GetValue(many) ?? [],
                    Option<string> one => [parse.GetValue(one) ?? ""],
                    _ => [],
                };
                foreach (var value in values)
                {
                    if (spec.Read(settings, value) is { } problem)
                    {
                        error = spec.IsFlag ? $"{spec.Name} {problem}" : $"{spec.Name} '{value}' {problem}";
                        return false;
                    }
                }
            }
            if (off is not null && Given(parse, off) && parse.GetValue(off)) spec.Read(settings, "false");
        }
        foreach (var group in parse.GetValue(_compat) ?? [])
        {
            if (!ShareVocabulary.TryApplyCompat(settings, group, ignored, out error)) return false;
        }
        error = null;
        return true;
    }
}
