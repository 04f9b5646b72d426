namespace Hypervisor.Benchmarks;

/// <summary>Dispatches `hv-bench SUITE [options]` to the suite that measures it.</summary>
public static class Suites
{
    private static readonly Dictionary<string, (string Help, Func<string[], int> Run)> All = new(StringComparer.Ordinal)
    {
        ["fs"] = (FsBench.Help, FsBench.Run),
    };

    public static int Run(string[] args)
    {
        if (args.Length == 0 || !All.TryGetValue(args[0], out var suite))
        {
            Console.Error.WriteLine("usage: hv-bench SUITE [options]; suites:");
            foreach (var (name, s) in All) Console.Error.WriteLine($"  {name,-10} {s.Help}");
            return 2;
        }
        return suite.Run(args[1..]);
    }
}
