export * from '../../src/throwaway/exit-hooks.js';
