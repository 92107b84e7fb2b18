/** The program's version, set at release time. */
export const VERSION = '0.1.0';
